"""COCO json conversion and evaluation (framework spec 7.2 and section 12: COCO json, Expected results)."""
import json

import pytest
import torch

from atss_core.evaluation.coco import (
    COCOResults,
    check_expected_results,
    do_coco_evaluation,
    predictions_to_coco_json,
    record_to_coco_json,
)


def _record(boxes, labels, scores, size, box_offset=1):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "size": size,
        "box_offset": box_offset,
    }


@pytest.fixture
def dataset(coco_dataset):
    return coco_dataset


def _perfect_predictions(dataset, gt_images, scale=2.0):
    """GT boxes as +1-convention xyxy in an image resized by ``scale``."""
    records = []
    for image_id, width, height, objects in gt_images:
        boxes = [[x * scale, y * scale, (x + w - 1) * scale, (y + h - 1) * scale] for _, (x, y, w, h) in objects]
        labels = [dataset.json_category_id_to_contiguous_id[c] for c, _ in objects]
        records.append(_record(boxes, labels, [0.9] * len(objects), (round(width * scale), round(height * scale))))
    return records


def test_spec_example_label_12_to_json_13():
    contiguous_to_json = {i: i for i in range(1, 12)} | {12: 13}
    out = record_to_coco_json(_record([[10, 20, 29, 59]], [12], [0.5], (640, 480)), 640, 480, 77, contiguous_to_json)
    assert out == [{"image_id": 77, "category_id": 13, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.5}]


def test_boxes_are_rescaled_per_axis_to_the_original_image():
    # framework 12: 640x480 -> 1066x800 maps [10, 20, 39, 59] to this box
    record = _record([[16.65625, 33.33333, 64.959375, 98.33333]], [1], [0.7], (1066, 800))
    (out,) = record_to_coco_json(record, 640, 480, 1, {1: 1})
    assert out["bbox"] == pytest.approx([10, 20, 30, 40], abs=1e-4)
    assert out["score"] == pytest.approx(0.7)


def test_box_offset_zero_gives_continuous_width():
    (out,) = record_to_coco_json(_record([[10, 20, 29, 59]], [1], [0.5], (64, 64), box_offset=0), 64, 64, 1, {1: 1})
    assert out["bbox"] == [10.0, 20.0, 19.0, 39.0]


def test_dataset_level_conversion_uses_image_ids_and_skips_empty(dataset, gt_images):
    preds = _perfect_predictions(dataset, gt_images)
    preds[1] = _record([], [], [], (640, 400))
    results = predictions_to_coco_json(dataset, preds)
    assert {r["image_id"] for r in results} == {101, 310}
    first = results[0]
    assert first["category_id"] == 13 and first["bbox"] == pytest.approx([10, 20, 30, 40])


def test_perfect_predictions_give_ap_1(dataset, gt_images, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    results = do_coco_evaluation(dataset, _perfect_predictions(dataset, gt_images), output_folder=str(out))
    bbox = results.results["bbox"]
    assert bbox["AP"] == pytest.approx(1.0)
    assert bbox["AP50"] == pytest.approx(1.0)
    assert bbox["AP75"] == pytest.approx(1.0)
    written = json.loads((out / "bbox.json").read_text())
    assert len(written) == sum(len(objs) for *_, objs in gt_images)
    saved = json.loads((out / "coco_results.json").read_text())
    assert saved["results"]["bbox"]["AP"] == pytest.approx(1.0)
    assert len(saved["class_thresholds"]) == 13


def test_shifted_predictions_lower_ap(dataset, gt_images):
    # Independent check that the evaluator is not trivially 1: shift every box
    # by half its width -> IoU 1/3 (+1 widths aside) < 0.5 -> AP 0.
    preds = _perfect_predictions(dataset, gt_images, scale=1.0)
    for rec in preds:
        widths = rec["boxes"][:, 2] - rec["boxes"][:, 0] + 1
        rec["boxes"][:, [0, 2]] += widths[:, None] / 2
    results = do_coco_evaluation(dataset, preds)
    assert results.results["bbox"]["AP50"] == pytest.approx(0.0)


def test_empty_predictions_do_not_crash(dataset, gt_images, tmp_path):
    preds = [_record([], [], [], (w, h)) for _, w, h, _ in gt_images]
    results = do_coco_evaluation(dataset, preds, output_folder=str(tmp_path))
    for metric, value in results.results["bbox"].items():
        assert value in (-1.0, 0.0), metric
    assert json.loads((tmp_path / "bbox.json").read_text()) == []


def _results(ap):
    results = COCOResults("bbox")
    results.results["bbox"]["AP"] = ap
    return results


@pytest.mark.parametrize("ap, ok", [(0.386, True), (0.400, True), (0.385, False), (0.402, False)])
def test_expected_results_bounds_are_strict(ap, ok):
    assert check_expected_results(_results(ap), [["bbox", "AP", [0.393, 0.002]]], 4) is ok


def test_unknown_iou_type_is_rejected():
    with pytest.raises(ValueError, match="segm"):
        COCOResults("segm")
