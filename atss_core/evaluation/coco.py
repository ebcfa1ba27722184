"""COCO bbox evaluation of dense-detector predictions (framework spec section 7.2).

Predictions arrive as plain records (see ``engine.inference.boxlist_to_record``):
``{"boxes": Tensor[N, 4] xyxy, "scores": [N], "labels": [N] int64, "size": (w, h),
"box_offset": 0 | 1}`` in network-input coordinates, one per dataset index.
"""
import contextlib
import io
import json
import logging
import os
import tempfile
from collections import OrderedDict

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from atss_core.utils.miscellaneous import save_json

logger = logging.getLogger(__name__)

BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Names of COCOeval.stats, the 12 lines of its printed summary.
SUMMARY_METRICS = BBOX_METRICS + ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def record_to_coco_json(record, image_width, image_height, image_id, contiguous_to_json):
    """COCO result dicts of one image's record, in original-image pixels.

    Boxes are rescaled from ``record["size"]`` to (image_width, image_height)
    with separate x and y ratios, then written as ``[x, y, w, h]`` with
    ``w = x2 - x1 + box_offset`` (the +1 convention, spec C4).
    """
    boxes = record["boxes"].float()
    if boxes.numel() == 0:
        return []
    w, h = record["size"]
    scale = boxes.new_tensor([image_width / w, image_height / h] * 2)
    x1, y1, x2, y2 = (boxes * scale).unbind(dim=1)
    offset = record.get("box_offset", 1)
    xywh = torch.stack((x1, y1, x2 - x1 + offset, y2 - y1 + offset), dim=1).tolist()
    scores = record["scores"].tolist()
    labels = record["labels"].tolist()
    return [
        {"image_id": image_id, "category_id": contiguous_to_json[label], "bbox": box, "score": score}
        for box, score, label in zip(xywh, scores, labels)
    ]


def predictions_to_coco_json(dataset, predictions):
    """All result dicts of ``predictions`` (a list indexed like ``dataset``)."""
    results = []
    for index, record in enumerate(predictions):
        if record is None or len(record["boxes"]) == 0:
            continue
        info = dataset.get_img_info(index)
        results.extend(
            record_to_coco_json(
                record,
                info["width"],
                info["height"],
                dataset.id_to_img_map[index],
                dataset.contiguous_category_id_to_json_id,
            )
        )
    return results


def evaluate_bbox(coco_gt, json_path):
    """Run COCOeval (bbox) on the results stored in ``json_path``.

    An empty result file is evaluated against an empty ``COCO()`` (pycocotools'
    ``loadRes`` cannot take an empty list): every AP is then 0 or -1.
    Returns the ``COCOeval`` and the 12 lines of its summary (also logged).
    """
    with open(json_path) as f:
        has_results = len(json.load(f)) > 0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt = coco_gt.loadRes(json_path) if has_results else COCO()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        coco_eval.summarize()
    summary = printed.getvalue().rstrip("\n").splitlines()
    logger.info("COCO bbox evaluation:\n%s", "\n".join(summary))
    return coco_eval, summary


def per_class_ap(coco_eval):
    """AP (IoU .50:.95) and AP50 per category, area "all", 100 detections.

    Returns a list, in ``coco_eval.params.catIds`` order, of
    ``{"id": json category id, "category": name, "AP": float or None, "AP50": ...}``;
    None where the category has no ground truth (precision -1 throughout).
    """
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # [T, R, K]: IoU thresholds x recall x classes
    rows = []
    for k, cat_id in enumerate(coco_eval.params.catIds):
        row = {"id": int(cat_id), "category": coco_eval.cocoGt.cats[cat_id]["name"]}
        for metric, values in (("AP", precision[:, :, k]), ("AP50", precision[0, :, k])):
            valid = values[values > -1]
            row[metric] = float(valid.mean()) if valid.size else None
        rows.append(row)
    return rows


def format_per_class_table(rows, pairs_per_line=3):
    """A text table of ``category | AP`` pairs, several per line (as detectron2 logs it)."""
    cells = [(r["category"], "-" if r["AP"] is None else f"{r['AP']:.3f}") for r in rows]
    name_width = max([len("category")] + [len(c[0]) for c in cells])
    header = " | ".join([f"{'category':<{name_width}} | {'AP':>5}"] * min(pairs_per_line, max(len(cells), 1)))
    lines = [header, "-" * len(header)]
    for start in range(0, len(cells), pairs_per_line):
        chunk = cells[start:start + pairs_per_line]
        lines.append(" | ".join(f"{name:<{name_width}} | {ap:>5}" for name, ap in chunk))
    return "\n".join(lines)


class COCOResults:
    """``results["bbox"]`` = OrderedDict of AP, AP50, AP75, APs, APm, APl (-1 = not run)."""

    METRICS = {"bbox": BBOX_METRICS}

    def __init__(self, *iou_types):
        for t in iou_types:
            if t not in self.METRICS:
                raise ValueError(f"unsupported iou type {t!r}; supported: {sorted(self.METRICS)}")
        self.results = OrderedDict((t, OrderedDict((m, -1.0) for m in self.METRICS[t])) for t in iou_types)

    def update(self, coco_eval):
        iou_type = coco_eval.params.iouType
        metrics = self.results[iou_type]
        for i, metric in enumerate(self.METRICS[iou_type]):
            metrics[metric] = float(coco_eval.stats[i])

    def __repr__(self):
        return repr(self.results)


def check_expected_results(results, expected_results, sigma_tol):
    """Log PASS/FAIL for each ``(task, metric, (mean, std))``; True iff all pass.

    A value passes iff ``mean - sigma_tol * std < value < mean + sigma_tol * std``
    (strict on both sides).
    """
    all_ok = True
    for task, metric, (mean, std) in expected_results:
        actual = results.results[task][metric]
        lo, hi = mean - sigma_tol * std, mean + sigma_tol * std
        ok = lo < actual < hi
        all_ok &= ok
        msg = (
            f"{task} > {metric} sanity check (actual vs. expected): {actual:.3f} vs. "
            f"mean={mean:.4f}, std={std:.4f}, range=({lo:.4f}, {hi:.4f})"
        )
        if ok:
            logger.info("PASS: " + msg)
        else:
            logger.error("FAIL: " + msg)
    return all_ok


def compute_thresholds_for_classes(coco_eval):
    """Per class, the best F-measure and its score at IoU 0.5, area all, 100 dets.

    Returns two float arrays of length C (classes without gt or detections
    give F = 0 and score 0). These are the demo's per-class thresholds.
    """
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]  # [R, C], recall thresholds x classes
    scores = coco_eval.eval["scores"][0, :, :, 0, -1]
    recall = np.asarray(coco_eval.params.recThrs)[:, None]
    precision = np.clip(precision, 0, None)  # -1 marks "no gt"
    f_measure = 2 * precision * recall / np.maximum(precision + recall, 1e-6)
    best = f_measure.argmax(axis=0)
    columns = np.arange(f_measure.shape[1])
    return f_measure[best, columns], np.clip(scores[best, columns], 0, None)


def do_coco_evaluation(dataset, predictions, output_folder=None, expected_results=(), expected_results_sigma_tol=4):
    """Write ``bbox.json``, evaluate it, and return a ``COCOResults``.

    ``dataset`` needs ``coco``, ``get_img_info``, ``id_to_img_map`` and
    ``contiguous_category_id_to_json_id``. Logs the 12-line summary and a
    per-category AP table. With ``output_folder`` the detections (``bbox.json``)
    and ``coco_results.json`` are kept there; the latter holds the metrics, the
    12 summary values and lines, per-category AP/AP50 and the per-class
    score thresholds.
    """
    for attr in ("coco", "get_img_info", "id_to_img_map", "contiguous_category_id_to_json_id"):
        if not hasattr(dataset, attr):
            raise TypeError(f"COCO evaluation needs a COCO-style dataset; {type(dataset).__name__} has no '{attr}'")
    if len(predictions) != len(dataset):
        logger.warning("%d predictions for a dataset of %d images", len(predictions), len(dataset))
    json_results = predictions_to_coco_json(dataset, predictions)
    logger.info("Evaluating %d detections (bbox)", len(json_results))

    with contextlib.ExitStack() as stack:
        folder = output_folder or stack.enter_context(tempfile.TemporaryDirectory())
        json_path = os.path.join(folder, "bbox.json")
        save_json(json_results, json_path)
        coco_eval, summary_lines = evaluate_bbox(dataset.coco, json_path)
    results = COCOResults("bbox")
    results.update(coco_eval)
    logger.info(results)
    classes = per_class_ap(coco_eval)
    logger.info("Per-category bbox AP:\n%s", format_per_class_table(classes))

    summary = {
        "results": results.results,
        "summary": dict(zip(SUMMARY_METRICS, (float(v) for v in coco_eval.stats))),
        "summary_lines": summary_lines,
        "per_class": classes,
    }
    if json_results:
        f_measure, thresholds = compute_thresholds_for_classes(coco_eval)
        logger.info("Maximum f-measures for classes: %s", [round(float(v), 4) for v in f_measure])
        logger.info("Score thresholds for classes: %s", [round(float(v), 4) for v in thresholds])
        summary["class_thresholds"] = [float(v) for v in thresholds]
    if expected_results:
        summary["expected_results_pass"] = check_expected_results(results, expected_results, expected_results_sigma_tol)
    if output_folder:
        save_json(summary, os.path.join(output_folder, "coco_results.json"))
    return results
