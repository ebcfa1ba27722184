"""Label assignment rules: pure functions of anchors (or points) and gts, one file per rule."""
from .atss import (
    POSITIVE_TYPES,
    AnchorAssignment,
    atss_assign,
    background,
    iou_assign,
    max_iou_assign,
    ssc_assign,
    topk_assign,
)
from .dsla import DSLA_REGRESS_RANGES, SmoothAssignment, dsla_assign
from .dynamic_atss import DynamicAssignment, dynamic_atss_assign
from .fcos import FCOS_SIZE_RANGES, fcos_assign
from .max_iou import Matcher

__all__ = [
    "POSITIVE_TYPES",
    "AnchorAssignment",
    "DSLA_REGRESS_RANGES",
    "DynamicAssignment",
    "FCOS_SIZE_RANGES",
    "Matcher",
    "SmoothAssignment",
    "atss_assign",
    "background",
    "dsla_assign",
    "dynamic_atss_assign",
    "fcos_assign",
    "iou_assign",
    "max_iou_assign",
    "ssc_assign",
    "topk_assign",
]
