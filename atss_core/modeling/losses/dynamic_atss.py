"""Dynamic ATSS losses (atss_heads §8.3): quality focal classification, GIoU weighted by
the predicted IoU, and BCE of the IoU branch (the ``centerness`` conv).

Fixes of ZTX-100/DLA-Combined-IoUs that leave finite results unchanged: the
logs are evaluated stably (the original's log(p) is -inf once the sigmoid
saturates), and the box-loss normaliser is reduced on every rank every
iteration (the original skipped the all-reduce on ranks without positives).
One degenerate case differs: if every positive's predicted IoU is 0, the box
loss is 0 here, where the original divided an unweighted sum by 0.
"""
from typing import Dict, Sequence

import torch
from torch import Tensor

from atss_core.modeling.assigners.dynamic_atss import DynamicAssignment
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.utils import DensePredictions
from atss_core.utils.comm import reduce_mean

from .atss import decoded_giou_loss, quality_weighted_losses
from .qfl import quality_focal_loss


def dynamic_atss_loss(
    predictions: DensePredictions,
    assignments: Sequence[DynamicAssignment],
    anchors: Tensor,
    box_coder: BoxCoder,
    gamma: float = 2.0,
    reg_loss_weight: float = 2.0,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4), centerness (N, R)
            (the IoU branch), float32.
        assignments: N per-image ``DynamicAssignment`` (labels, matched_boxes, pred_ious (R,)).
        anchors: (R, 4), shared by all images.
        box_coder: decodes ``bbox_reg`` against the anchors.
        gamma: QFL exponent (MODEL.ATSS.LOSS_GAMMA); MODEL.ATSS.LOSS_ALPHA is unused.
        reg_loss_weight: multiplies the GIoU loss (MODEL.ATSS.REG_LOSS_WEIGHT).
    Returns:
        {"loss_cls", "loss_reg", "loss_IoU"}, scalars.
    """
    n, r, c = predictions.cls_logits.shape
    labels = torch.stack([a.labels for a in assignments])  # (N, R)
    matched_boxes = torch.stack([a.matched_boxes for a in assignments])  # (N, R, 4)
    pred_ious = torch.stack([a.pred_ious for a in assignments])  # (N, R)
    pos = labels > 0

    num_pos_avg = reduce_mean(pos.sum()).clamp(min=1.0)
    loss_cls = quality_focal_loss(
        predictions.cls_logits.reshape(n * r, c), labels.reshape(-1), pred_ious.reshape(-1), gamma
    ).sum() / num_pos_avg

    pos_anchors = anchors.expand(n, r, 4)[pos]  # (M, 4)
    box_losses = decoded_giou_loss(predictions.bbox_reg[pos], matched_boxes[pos], pos_anchors, box_coder)
    loss_reg, loss_iou = quality_weighted_losses(predictions, pos, box_losses, pred_ious[pos], num_pos_avg)
    return {"loss_cls": loss_cls, "loss_reg": loss_reg * reg_loss_weight, "loss_IoU": loss_iou}
