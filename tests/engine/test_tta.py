"""Test-time augmentation (framework spec 7.4 and the section 12 "TTA vote" checks, C26)."""
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from atss_core.config import cfg as default_cfg
from atss_core.data import transforms as T
from atss_core.data.datasets.toy_shapes import ensure_toy_dataset
from atss_core.engine.inference import run_test
from atss_core.engine.tta import AugPass, TestTimeAugmentation, box_vote, merge_nms, merge_vote, remove_boxes
from atss_core.modeling.detector import build_detection_model
from atss_core.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOTE_CONFIG = os.path.join(ROOT, "configs", "atss", "atss_dcnv2_X_101_64x4d_FPN_2x.yaml")

A, B = [0.0, 0.0, 9.0, 9.0], [1.0, 1.0, 10.0, 10.0]  # +1 IoU 81/119 = 0.680672


def _vote(boxes, scores, labels, soft, device):
    out = box_vote(
        torch.tensor(boxes, device=device),
        torch.tensor(scores, device=device),
        torch.tensor(labels, device=device),
        vote_thresh=0.66,
        soft_score_thresh=0.05 if soft else None,
    )
    return [t.cpu() for t in out]


def test_vote_spec_example(device):
    boxes, scores, labels = _vote([A, B], [0.9, 0.6], [1, 1], soft=False, device=device)
    torch.testing.assert_close(boxes, torch.tensor([[0.4, 0.4, 9.4, 9.4]]))
    torch.testing.assert_close(scores, torch.tensor([0.9]))
    assert labels.tolist() == [1]


def test_soft_vote_spec_example(device):
    boxes, scores, labels = _vote([B, A], [0.6, 0.9], [3, 3], soft=True, device=device)
    torch.testing.assert_close(boxes, torch.tensor([[0.4, 0.4, 9.4, 9.4], B]))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.191597]), rtol=0, atol=1e-6)
    assert labels.tolist() == [3, 3]


@pytest.mark.parametrize("soft", [False, True])
def test_lone_detections_and_other_classes_are_unchanged(soft, device):
    # A and B in different classes never vote together; a class with one box keeps it
    boxes, scores, labels = _vote([A, B], [0.9, 0.6], [1, 2], soft=soft, device=device)
    torch.testing.assert_close(boxes, torch.tensor([A, B]))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6]))
    assert labels.tolist() == [1, 2]


def _iou_plus_one(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def _reference_vote(boxes, scores, labels, vote_thresh, soft_thresh):
    """The spec's per-class loop, in float64 Python."""
    out = []
    for label in sorted(set(labels)):
        pool = sorted((i for i in range(len(labels)) if labels[i] == label), key=lambda i: -scores[i])
        while pool:
            top = pool[0]
            iou = {i: _iou_plus_one(boxes[top], boxes[i]) for i in pool}
            cluster = [i for i in pool if iou[i] >= vote_thresh]
            pool = [i for i in pool if i not in cluster]
            if len(cluster) == 1:
                out.append((scores[top], list(boxes[top]), label))
                continue
            weight = sum(scores[i] for i in cluster)
            box = [sum(scores[i] * boxes[i][k] for i in cluster) / weight for k in range(4)]
            out.append((max(scores[i] for i in cluster), box, label))
            if soft_thresh is not None:
                for i in cluster:
                    soft = scores[i] * (1 - iou[i])
                    if soft >= soft_thresh:
                        out.append((soft, list(boxes[i]), label))
    return sorted(out, key=lambda r: -r[0])


@pytest.mark.parametrize("soft", [None, 0.05])
def test_vote_matches_a_float64_reference(soft, device):
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, 200, size=(6, 2))
    boxes, labels = [], []
    for _ in range(60):
        k = rng.integers(6)
        cx, cy = centres[k] + rng.normal(0, 3, size=2)
        w, h = rng.uniform(20, 40, size=2)
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        labels.append(int(k % 3) + 1)
    boxes = np.float32(boxes).astype(np.float64).tolist()
    scores = np.float32(rng.permutation(np.linspace(0.06, 0.99, 60))).astype(np.float64).tolist()
    got = box_vote(
        torch.tensor(boxes, dtype=torch.float32, device=device),
        torch.tensor(scores, dtype=torch.float32, device=device),
        torch.tensor(labels, device=device),
        0.66,
        soft,
    )
    expected = _reference_vote(boxes, scores, labels, 0.66, soft)
    assert 6 < len(expected) < 60  # clusters formed
    got_boxes, got_scores, got_labels = (t.cpu() for t in got)
    torch.testing.assert_close(got_scores, torch.tensor([r[0] for r in expected], dtype=torch.float32))
    torch.testing.assert_close(got_boxes, torch.tensor([r[1] for r in expected], dtype=torch.float32))
    assert got_labels.tolist() == [r[2] for r in expected]


def test_empty_input():
    boxes, scores, labels = box_vote(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.66, 0.05)
    assert boxes.shape == (0, 4) and len(scores) == len(labels) == 0


def test_remove_boxes_range_is_strict():
    # [0, 256]: a 200x200 box (area 40000 < 65536) stays, a 256x256 (+1) box goes
    boxlist = BoxList(torch.tensor([[0.0, 0.0, 199.0, 199.0], [0.0, 0.0, 255.0, 255.0]]), (400, 400))
    boxlist.add_field("scores", torch.tensor([0.5, 0.5]))
    kept = remove_boxes(boxlist, (0, 256))
    assert kept.bbox.tolist() == [[0.0, 0.0, 199.0, 199.0]]
    assert len(remove_boxes(boxlist, (200, 1000))) == 1  # 200² = 40000 is not > 40000


def _detections(boxes, scores, labels, size=(100, 100)):
    boxlist = BoxList(torch.tensor(boxes, dtype=torch.float32), size)
    boxlist.add_field("scores", torch.tensor(scores))
    boxlist.add_field("labels", torch.tensor(labels))
    return boxlist


def test_merge_nms_is_class_aware_and_capped():
    dets = _detections([A, B, A, [50, 50, 60, 60]], [0.9, 0.6, 0.8, 0.7], [1, 1, 2, 1])
    merged = merge_nms(dets, nms_thresh=0.6, max_detections=2)
    # B is suppressed by A (IoU 0.68 > 0.6); A of class 2 survives; the cap keeps the best two
    assert merged.get_field("scores").tolist() == pytest.approx([0.9, 0.8])
    assert merged.get_field("labels").tolist() == [1, 2]


def test_merge_vote_variants():
    dets = _detections([A, B, [50, 50, 60, 60]], [0.9, 0.6, 0.3], [1, 1, 1])
    nms = merge_vote(dets, "nms", 0.66, nms_thresh=0.6, soft_score_thresh=0.05, max_detections=1000)
    assert nms.get_field("scores").tolist() == pytest.approx([0.9, 0.3])
    vote = merge_vote(dets, "vote", 0.66, nms_thresh=0.6, soft_score_thresh=0.05, max_detections=1000)
    torch.testing.assert_close(vote.bbox[0], torch.tensor([0.4, 0.4, 9.4, 9.4]))
    soft = merge_vote(dets, "soft-vote", 0.66, nms_thresh=0.6, soft_score_thresh=0.05, max_detections=2)
    assert soft.get_field("scores").tolist() == pytest.approx([0.9, 0.3])  # the cap drops 0.191597
    with pytest.raises(ValueError, match="merge_type"):
        merge_vote(dets, "hard-vote", 0.66, 0.6, 0.05, 100)


def _vote_cfg(*opts):
    cfg = default_cfg.clone()
    cfg.merge_from_file(VOTE_CONFIG)
    cfg.merge_from_list(["TEST.BBOX_AUG.ENABLED", True, *opts])
    return cfg


def test_passes_of_the_shipped_vote_config():
    tta = TestTimeAugmentation.from_config(_vote_cfg())
    assert len(tta.passes) == 26  # identity, flip, 12 scales x (plain, flipped)
    assert tta.passes[:2] == [AugPass(800, 1333), AugPass(800, 1333, hflip=True)]
    assert tta.passes[2] == AugPass(400, 1333, area_range=(96, 10000))
    assert tta.passes[3] == AugPass(400, 1333, hflip=True, area_range=(96, 10000))
    assert tta.passes[-1] == AugPass(1800, 3000, hflip=True, area_range=(0, 96))
    # the vote path keeps MAX_SIZE_TEST below scale 800
    assert [p.max_size for p in tta.passes[2::2]] == [1333] * 5 + [3000] * 7
    assert tta.merge.func is merge_vote
    assert tta.merge.keywords == dict(
        merge_type="soft-vote", vote_thresh=0.66, nms_thresh=0.6, soft_score_thresh=0.05, max_detections=1000
    )


def test_passes_without_vote_and_head_keys():
    cfg = _vote_cfg("TEST.BBOX_AUG.VOTE", False, "MODEL.ATSS.NMS_TH", 0.5, "TEST.DETECTIONS_PER_IMG", 50)
    tta = TestTimeAugmentation.from_config(cfg)
    assert tta.passes[2] == AugPass(400, 3000)  # BBOX_AUG.MAX_SIZE for every extra scale, no ranges
    assert tta.merge.func is merge_nms
    assert tta.merge.keywords == dict(nms_thresh=0.5, max_detections=50)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"SCALE_RANGES needs one \[min, max\] per scale.*1 ranges for 12 scales"):
        TestTimeAugmentation.from_config(_vote_cfg("TEST.BBOX_AUG.SCALE_RANGES", [[0, 100]]))
    with pytest.raises(ValueError, match=r"TEST.BBOX_AUG.MERGE_TYPE must be one of"):
        TestTimeAugmentation.from_config(_vote_cfg("TEST.BBOX_AUG.MERGE_TYPE", "soft_vote"))
    cfg = _vote_cfg()
    cfg.MODEL.ATSS.pop("PRE_NMS_TOP_N")  # a head namespace without the key the vote cap reads
    with pytest.raises(ValueError, match=r"\['MODEL.ATSS.PRE_NMS_TOP_N'\] do not exist"):
        TestTimeAugmentation.from_config(cfg)


class _BrightBoxDetector(nn.Module):
    """Finds the +1-convention box of the pixels of channel 0 above 0.5 in each image."""

    def forward(self, images):
        out = []
        for image, (h, w) in zip(images.tensors, images.image_sizes):
            ys, xs = torch.nonzero(image[0, :h, :w] > 0.5, as_tuple=True)
            boxlist = BoxList(torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()[None], (w, h))
            boxlist.add_field("scores", torch.ones(1))
            boxlist.add_field("labels", torch.ones(1, dtype=torch.int64))
            out.append(boxlist)
        return out


def _image_with_rectangle(w, h, x1, y1, x2, y2):
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[y1:y2 + 1, x1:x2 + 1] = 255
    return Image.fromarray(pixels)


def test_flipped_and_scaled_passes_give_the_boxes_back():
    images = [_image_with_rectangle(40, 30, 5, 3, 14, 8), _image_with_rectangle(30, 40, 20, 25, 27, 36)]
    passes = [AugPass(30, 1000), AugPass(30, 1000, hflip=True), AugPass(60, 1000), AugPass(60, 1000, hflip=True)]
    tta = TestTimeAugmentation(passes, T.Normalize([0, 0, 0], [1, 1, 1], False), 32, merge=lambda b: b)
    first, second = tta(_BrightBoxDetector(), images, "cpu")
    assert first.size == (40, 30) and second.size == (30, 40)
    # the flipped pass is exact (x' = W - x - 1 both ways); the 2x passes are within the resampling blur
    for result, box in ((first, [5, 3, 14, 8]), (second, [20, 25, 27, 36])):
        assert result.bbox[:2].tolist() == [box, box]
        torch.testing.assert_close(result.bbox[2:], torch.tensor([box, box], dtype=torch.float32), atol=0.5, rtol=0)


@pytest.fixture(scope="module")
def toy_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta_toy")
    _, val = ensure_toy_dataset(str(root / "toy"), num_train=2, num_val=3, seed=5, size=64)
    cfg = default_cfg.clone()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "DATASETS.TEST_ANN_FILES", (val["ann_file"],),
        "DATASETS.TEST_IMG_DIRS", (val["root"],), "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128,
        "DATALOADER.NUM_WORKERS", 0, "TEST.IMS_PER_BATCH", 3, "OUTPUT_DIR", str(root / "out"),
        # an untrained head scores about PRIOR_PROB: keep every candidate so there is something to merge
        "MODEL.ATSS.INFERENCE_TH", 0.0, "MODEL.ATSS.PRE_NMS_TOP_N", 30,
    ])
    return cfg


def _predictions(cfg, model):
    name = os.path.splitext(os.path.basename(cfg.DATASETS.TEST_ANN_FILES[0]))[0]
    run_test(cfg, model)
    folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
    summary = json.loads(open(os.path.join(folder, "coco_results.json")).read())
    return torch.load(os.path.join(folder, "predictions.pth"), weights_only=True), summary


def test_identity_only_tta_equals_plain_inference(toy_cfg):
    torch.manual_seed(0)
    model = build_detection_model(toy_cfg)
    plain, _ = _predictions(toy_cfg, model)
    cfg = toy_cfg.clone()
    cfg.TEST.BBOX_AUG.ENABLED = True  # the head then leaves NMS and the cap to the merge
    tta_model = build_detection_model(cfg)
    tta_model.load_state_dict(model.state_dict())
    merged, _ = _predictions(cfg, tta_model)
    assert len(plain) == len(merged) == 3
    for p, m in zip(plain, merged):
        assert len(p["boxes"]) > 0 and p["size"] == m["size"]
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(p[key], m[key])


@pytest.mark.parametrize("vote", [False, True])
def test_tta_runs_end_to_end_on_the_toy_model(toy_cfg, vote):
    cfg = toy_cfg.clone()
    cfg.merge_from_list([
        "TEST.BBOX_AUG.ENABLED", True, "TEST.BBOX_AUG.H_FLIP", True, "TEST.BBOX_AUG.SCALES", (96,),
        "TEST.BBOX_AUG.SCALE_H_FLIP", True, "TEST.BBOX_AUG.VOTE", vote, "TEST.BBOX_AUG.MERGE_TYPE", "soft-vote",
        "TEST.BBOX_AUG.SCALE_RANGES", [[16, 1000]], "TEST.BBOX_AUG.MAX_SIZE", 256,
    ])
    torch.manual_seed(0)
    random.seed(0)
    predictions, summary = _predictions(cfg, build_detection_model(cfg))
    assert len(predictions) == 3 and len(summary["summary_lines"]) == 12
    for record in predictions:
        w, h = record["size"]
        assert min(w, h) == 64  # the identity pass's frame
        boxes = record["boxes"]
        assert 0 < len(boxes) <= (1000 if vote else cfg.TEST.DETECTIONS_PER_IMG)
        assert torch.isfinite(boxes).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
