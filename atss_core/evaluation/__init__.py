"""Evaluation of detections (COCO bbox)."""
from .coco import COCOResults, check_expected_results, do_coco_evaluation

__all__ = ["COCOResults", "check_expected_results", "do_coco_evaluation"]
