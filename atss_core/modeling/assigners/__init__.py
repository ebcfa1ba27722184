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
from .dw import DWAssignment, dw_assign
from .dynamic_atss import DynamicAssignment, dynamic_atss_assign
from .fcos import FCOS_SIZE_RANGES, fcos_assign
from .max_iou import Matcher
from .o2f import O2FAssignment, o2f_assign, o2f_assign_points, soft_label_scale

__all__ = [
    "POSITIVE_TYPES",
    "AnchorAssignment",
    "DSLA_REGRESS_RANGES",
    "DWAssignment",
    "DynamicAssignment",
    "FCOS_SIZE_RANGES",
    "Matcher",
    "O2FAssignment",
    "SmoothAssignment",
    "atss_assign",
    "background",
    "dsla_assign",
    "dw_assign",
    "dynamic_atss_assign",
    "fcos_assign",
    "iou_assign",
    "max_iou_assign",
    "o2f_assign",
    "o2f_assign_points",
    "soft_label_scale",
    "ssc_assign",
    "topk_assign",
]
