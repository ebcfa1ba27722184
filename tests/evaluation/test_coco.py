"""COCO json conversion and evaluation (framework spec 7.2 and section 12: COCO json, Expected results)."""
import json

import pytest
import torch

from atss_core.evaluation.coco import (
    COCOResults,
    check_expected_results,
    do_coco_evaluation,
    format_per_class_table,
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


def _partly_right_predictions(dataset):
    """Continuous-convention boxes in original pixels, per image of conftest.IMAGES.

    json 13: both gts exact (AP 1); json 1: IoU 0.62 (matches at IoU .50/.55/.60
    only: AP 0.3, AP50 1); json 5: no detection (AP 0); json 14: a miss (AP 0).
    """
    label = dataset.json_category_id_to_contiguous_id
    per_image = [
        ([[10, 20, 40, 60], [100, 100, 300, 193]], [label[13], label[1]], (640, 480)),
        ([[200, 150, 208, 156]], [label[14]], (320, 200)),
        ([[150, 10, 210, 130]], [label[13]], (300, 300)),
    ]
    return [_record(boxes, labels, [0.9] * len(labels), size, box_offset=0) for boxes, labels, size in per_image]


def test_per_class_ap_summary_and_json(dataset, tmp_path, caplog):
    with caplog.at_level("INFO", logger="atss_core.evaluation.coco"):
        results = do_coco_evaluation(dataset, _partly_right_predictions(dataset), output_folder=str(tmp_path))
    # the overall AP is the mean over the 4 categories with ground truth
    assert results.results["bbox"]["AP"] == pytest.approx((0.3 + 0 + 1 + 0) / 4)
    assert results.results["bbox"]["AP50"] == pytest.approx((1 + 0 + 1 + 0) / 4)

    saved = json.loads((tmp_path / "coco_results.json").read_text())
    per_class = {row["id"]: row for row in saved["per_class"]}
    assert len(saved["per_class"]) == 13 and per_class[13]["category"] == "class_13"
    assert per_class[1]["AP"] == pytest.approx(0.3) and per_class[1]["AP50"] == pytest.approx(1.0)
    assert per_class[13]["AP"] == pytest.approx(1.0)
    assert per_class[5]["AP"] == 0.0 and per_class[14]["AP"] == 0.0
    assert per_class[2]["AP"] is None and per_class[2]["AP50"] is None  # no ground truth

    assert list(saved["summary"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl",
                                      "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert saved["summary"]["AP"] == pytest.approx(0.325)
    lines = saved["summary_lines"]
    assert len(lines) == 12 and all(line.lstrip().startswith("Average") for line in lines)
    assert lines[0].endswith("= 0.325") and "IoU=0.50:0.95 | area=   all | maxDets=100" in lines[0]

    logged = caplog.text
    assert "\n".join(lines) in logged
    table = logged[logged.index("Per-category bbox AP:"):]
    assert "class_13 | 1.000" in table and "class_1  | 0.300" in table and "class_2  |     -" in table


def test_per_class_table_layout():
    rows = [{"category": n, "AP": ap} for n, ap in [("a", 0.5), ("bb", None), ("c", 1.0), ("d", 0.25)]]
    assert format_per_class_table(rows, pairs_per_line=2).splitlines() == [
        "category |    AP | category |    AP",
        "-----------------------------------",
        "a        | 0.500 | bb       |     -",
        "c        | 1.000 | d        | 0.250",
    ]
