"""ATSS losses: focal classification, centerness-weighted GIoU, centerness BCE (atss_heads §6).

Normalisers are global means over ranks (spec C21, README §2.2): the
classification and centerness losses divide by max(mean #positives, 1), the
box loss by the mean sum of centerness targets. Both collectives run on every
rank every iteration, whether or not the rank has positives.
"""
from typing import Callable, Dict, Sequence, Tuple

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


def decoded_giou_loss(deltas: Tensor, gt_boxes: Tensor, anchors: Tensor, box_coder: BoxCoder) -> Tensor:
    """ATSS box loss: 1 - GIoU of the decoded prediction and the gt; (M, 4) each -> (M,)."""
    return giou_loss(box_coder.decode(deltas, anchors), gt_boxes)


def quality_weighted_losses(
    predictions: DensePredictions, pos: Tensor, box_losses: Tensor, quality: Tensor, num_pos_avg: Tensor
) -> Tuple[Tensor, Tensor]:
    """Box loss weighted by a quality target, and BCE of the quality branch against it.

    The quality is ATSS/FCOS's centerness target or Dynamic ATSS's predicted
    IoU. pos (N, R) bool; box_losses, quality (M,) for the M positives.
    Returns (sum(box_losses * quality) / mean over ranks of sum(quality),
    BCE(centerness logits[pos], quality, sum) / num_pos_avg), not yet scaled
    by any loss weight. The collective runs on every rank, with or without positives.
    """
    sum_quality_avg = reduce_mean(quality.sum())
    if not len(quality):
        # Zero-valued but connected to every prediction, so DDP sees all grads.
        return predictions.bbox_reg.sum() * 0, predictions.centerness.sum() * 0
    # Positives have centerness > 0, so only all-zero predicted IoUs (Dynamic
    # ATSS) reach the floor, where the original divided by zero.
    loss_reg = (box_losses * quality).sum() / sum_quality_avg.clamp(min=torch.finfo(quality.dtype).tiny)
    loss_quality = F.binary_cross_entropy_with_logits(predictions.centerness[pos], quality, reduction="sum")
    return loss_reg, loss_quality / num_pos_avg


def atss_loss(
    predictions: DensePredictions,
    assignments: Sequence[AnchorAssignment],
    anchors: Tensor,
    box_coder: BoxCoder,
    focal_loss: Callable[[Tensor, Tensor], Tensor],
    reg_loss_weight: float = 2.0,
    box_loss: Callable[..., Tensor] = decoded_giou_loss,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4), centerness (N, R), float32.
        assignments: N per-image ``AnchorAssignment`` (labels (R,), matched_boxes (R, 4)).
        anchors: (R, 4), shared by all images.
        box_coder: decodes ``bbox_reg`` against the anchors.
        focal_loss: (logits (M, C), labels (M,) int64) -> summed sigmoid focal loss.
        reg_loss_weight: multiplies the box loss (MODEL.ATSS.REG_LOSS_WEIGHT; 1 for FCOS).
        box_loss: (deltas, gt_boxes, anchors (M, 4), box_coder) -> (M,); ATSS:
            GIoU of the decoded boxes; FCOS passes its IoU loss on (l, t, r, b).
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
    box_losses = box_loss(predictions.bbox_reg[pos], pos_gts, pos_anchors, box_coder)
    loss_reg, loss_ctr = quality_weighted_losses(
        predictions, pos, box_losses, centerness_targets(pos_anchors, pos_gts), num_pos_avg
    )
    return {"loss_cls": loss_cls, "loss_reg": loss_reg * reg_loss_weight, "loss_centerness": loss_ctr}
