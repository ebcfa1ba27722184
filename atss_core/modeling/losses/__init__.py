"""Loss functions of the dense heads: shared box losses plus one function per method."""
from .atss import atss_loss, centerness_targets, decoded_giou_loss, quality_weighted_losses
from .dsla import dsla_loss
from .dw import dw_loss
from .dynamic_atss import dynamic_atss_loss
from .fcos import fcos_box_loss, ltrb_iou_loss
from .giou import giou_loss
from .o2f import o2f_loss
from .qfl import quality_focal_loss
from .retinanet import retinanet_loss

__all__ = [
    "atss_loss",
    "centerness_targets",
    "decoded_giou_loss",
    "dsla_loss",
    "dw_loss",
    "dynamic_atss_loss",
    "fcos_box_loss",
    "giou_loss",
    "ltrb_iou_loss",
    "o2f_loss",
    "quality_focal_loss",
    "quality_weighted_losses",
    "retinanet_loss",
]
