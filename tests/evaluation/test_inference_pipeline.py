"""engine.inference end to end on CPU: fake detector -> predictions.pth -> COCO AP."""
import json
import re

import pytest
import torch
from torch import nn

from atss_core.engine.inference import accumulate_predictions, inference
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList


class _OracleDetector(nn.Module):
    """Returns each image's ground truth (known by dataset index) in a 2x resized frame."""

    def __init__(self, dataset, gt_images):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.answers = []
        for _, width, height, objects in gt_images:
            boxes = torch.tensor([[x, y, x + w - 1, y + h - 1] for _, (x, y, w, h) in objects]) * 2.0
            detection = BoxList(boxes, (2 * width, 2 * height))
            detection.add_field("scores", torch.full((len(objects),), 0.8))
            labels = [dataset.json_category_id_to_contiguous_id[c] for c, _ in objects]
            detection.add_field("labels", torch.tensor(labels))
            self.answers.append(detection)
        self.seen_training_flags = []

    def forward(self, images):
        self.seen_training_flags.append(self.training)
        assert not torch.is_grad_enabled()
        return [self.answers[i] for i in images.tensors[:, 0, 0, 0].long().tolist()]


class _Loader(list):
    """Batches ``(ImageList, targets, indices)``; the image tensor encodes its index."""

    def __init__(self, dataset, batches):
        super().__init__()
        self.dataset = dataset
        for indices in batches:
            tensors = torch.tensor(indices, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()
            self.append((ImageList(tensors, [(4, 4)] * len(indices)), (None,) * len(indices), tuple(indices)))


def test_inference_saves_plain_predictions_and_evaluates(coco_dataset, gt_images, tmp_path):
    model = _OracleDetector(coco_dataset, gt_images).train()
    loader = _Loader(coco_dataset, [[2, 0], [1]])
    expected = [["bbox", "AP", [1.0, 0.001]]]
    results = inference(model, loader, "tiny", device="cpu", output_folder=str(tmp_path), expected_results=expected)
    assert model.seen_training_flags == [False, False]
    assert results.results["bbox"]["AP"] == pytest.approx(1.0)

    saved = torch.load(tmp_path / "predictions.pth", weights_only=True)
    assert len(saved) == 3
    for index, record in enumerate(saved):
        assert set(record) == {"boxes", "scores", "labels", "size", "box_offset"}
        _, width, height, objects = gt_images[index]
        assert tuple(record["size"]) == (2 * width, 2 * height)
        assert record["boxes"].shape == (len(objects), 4)
        assert record["box_offset"] == 1
    assert (tmp_path / "bbox.json").exists()
    assert json.loads((tmp_path / "coco_results.json").read_text())["expected_results_pass"] is True


def test_accumulate_merges_ranks_and_marks_missing():
    a = {0: "r0", 2: "r2"}
    b = {2: "r2-dup", 3: "r3"}  # 2 is the distributed sampler's padding duplicate
    merged = accumulate_predictions([a, b], 5)
    assert merged == ["r0", None, "r2-dup", "r3", None]


def test_progress_bar_shows_images_per_second(coco_dataset, gt_images, capsys):
    model = _OracleDetector(coco_dataset, gt_images)
    inference(model, _Loader(coco_dataset, [[0, 1], [2]]), "tiny_set", device="cpu")
    final = capsys.readouterr().err.split("\r")[-1]
    assert re.match(r"tiny_set: .*\b3(/3)?(img)? .*[\d.]+ ?img/s", final), final
