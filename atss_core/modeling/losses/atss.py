"""ATSS losses: focal classification, centerness-weighted GIoU, centerness BCE (atss_heads §6).

Normalisers are global means over ranks (spec C21, README §2.2): the
classification and centerness losses divide by max(mean #positives, 1), the
box loss by the mean sum of centerness targets. Both collectives run on every
rank every iteration, whether or not the rank has positives.
"""
from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from atss_core.modeling.assigners.atss import AnchorAssignment
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.utils import DensePredictions
from atss_core.utils.comm import reduce_mean

from .giou import giou_loss


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of anchor centres in their gts.

    anchors, gt_boxes (M, 4) -> (M,). Positives have their centre inside the
    gt (all four distances > 0.01), so the ratio is well defined.
    """
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    l, t = cx - gt_boxes[:, 0], cy - gt_boxes[:, 1]
    r, b = gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy
    return torch.sqrt((l.minimum(r) / l.maximum(r)) * (t.minimum(b) / t.maximum(b)))


def atss_loss(
    predictions: DensePredictions,
    assignments: Sequence[AnchorAssignment],
    anchors: Tensor,
    box_coder: BoxCoder,
    focal_loss: Callable[[Tensor, Tensor], Tensor],
    reg_loss_weight: float = 2.0,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4), centerness (N, R), float32.
        assignments: N per-image ``AnchorAssignment`` (labels (R,), matched_boxes (R, 4)).
        anchors: (R, 4), shared by all images.
        box_coder: decodes ``bbox_reg`` against the anchors.
        focal_loss: (logits (M, C), labels (M,) int64) -> summed sigmoid focal loss.
        reg_loss_weight: multiplies the GIoU loss (MODEL.ATSS.REG_LOSS_WEIGHT).
    Returns:
        {"loss_cls", "loss_reg", "loss_centerness"}, scalars.
    """
    n, r, c = predictions.cls_logits.shape
    labels = torch.stack([a.labels for a in assignments])  # (N, R)
    matched_boxes = torch.stack([a.matched_boxes for a in assignments])  # (N, R, 4)
    pos = labels > 0

    num_pos_avg = reduce_mean(pos.sum()).clamp(min=1.0)
    loss_cls = focal_loss(predictions.cls_logits.reshape(n * r, c), labels.reshape(-1)) / num_pos_avg

    pos_anchors = anchors.expand(n, r, 4)[pos]  # (M, 4)
    pos_gts = matched_boxes[pos]
    ctr_targets = centerness_targets(pos_anchors, pos_gts)
    sum_ctr_avg = reduce_mean(ctr_targets.sum())

    if len(pos_anchors):
        pos_boxes = box_coder.decode(predictions.bbox_reg[pos], pos_anchors)
        loss_reg = (giou_loss(pos_boxes, pos_gts) * ctr_targets).sum() / sum_ctr_avg
        loss_ctr = F.binary_cross_entropy_with_logits(
            predictions.centerness[pos], ctr_targets, reduction="sum"
        ) / num_pos_avg
    else:
        # Zero-valued but connected to every prediction, so DDP sees all grads.
        loss_reg = predictions.bbox_reg.sum() * 0
        loss_ctr = predictions.centerness.sum() * 0
    return {"loss_cls": loss_cls, "loss_reg": loss_reg * reg_loss_weight, "loss_centerness": loss_ctr}
