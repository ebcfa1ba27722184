"""Label assignment rules: pure functions of anchors (or points) and gts, one file per rule."""
from .atss import (
    POSITIVE_TYPES,
    AnchorAssignment,
    atss_assign,
    background,
    iou_assign,
    ssc_assign,
    topk_assign,
)
from .max_iou import Matcher

__all__ = [
    "POSITIVE_TYPES",
    "AnchorAssignment",
    "Matcher",
    "atss_assign",
    "background",
    "iou_assign",
    "ssc_assign",
    "topk_assign",
]
