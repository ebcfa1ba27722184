"""Dynamic ATSS (ZTX-100/DLA-Combined-IoUs): ATSS whose assignment adds the IoU of the
current predictions to the anchor IoU (atss_heads §8).

Everything else is ATSS's and reads ``MODEL.ATSS.*``: the same tower (its
``centerness`` conv predicts the IoU), anchors, coder and inference, hence the
same checkpoint keys. Only the assigner and the loss are replaced.
"""
import functools

from torch import Tensor

from atss_core.modeling.assigners import dynamic_atss_assign
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import dynamic_atss_loss
from atss_core.modeling.utils import DensePredictions

from . import DENSE_HEADS
from .atss import build_atss
from .dense_head import DenseHead, TargetAssigner


def decoded_predictions(anchors: Tensor, predictions: DensePredictions, box_coder: BoxCoder) -> dict:
    """One image's detached deltas (R, 4) -> the rule's ``pred_boxes`` (R, 4), not clipped."""
    return {"pred_boxes": box_coder.decode(predictions.bbox_reg, anchors)}


@DENSE_HEADS.register("DYNAMIC_ATSS_ON")
def build_dynamic_atss(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.ATSS
    head = build_atss(cfg, in_channels)
    box_coder = head.postprocessor.box_coder
    head.assign = TargetAssigner(
        dynamic_atss_assign,
        prediction_inputs=functools.partial(decoded_predictions, box_coder=box_coder),
        topk=c.TOPK,
        num_anchors_per_loc=head.num_anchors,
    )
    head.loss = functools.partial(
        dynamic_atss_loss, box_coder=box_coder, gamma=c.LOSS_GAMMA, reg_loss_weight=c.REG_LOSS_WEIGHT
    )
    return head
