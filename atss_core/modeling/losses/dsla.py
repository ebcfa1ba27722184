"""DSLA losses (dsla.md §2.5, §3): QFL against the IoU-coupled smooth label, and an IoU
(or GIoU) box loss weighted by the smooth label.

"Dynamic" means only that the soft target uses the IoU of the current,
detached predicted box with its gt, recomputed every iteration. Both
normalisers are soft sums averaged over ranks and floored at 1; the two
collectives run on every rank every iteration (the original skipped the box
one on ranks without positives, spec C21).
"""
from typing import Dict, Sequence

import torch
from torch import Tensor

from atss_core.modeling.assigners.dsla import SmoothAssignment
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.utils import DensePredictions
from atss_core.structures.boxlist_ops import iou_and_giou
from atss_core.utils.comm import reduce_mean

from .qfl import quality_focal_loss

BOX_LOSS_TYPES = ("iou", "giou")


def aligned_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of row-aligned pairs (M, 4), (M, 4) xyxy -> (M,); continuous areas, union >= eps."""
    return iou_and_giou(boxes1, boxes2, eps)[0]


def box_loss(pred_boxes: Tensor, target_boxes: Tensor, loss_type: str = "iou", eps: float = 1e-6) -> Tensor:
    """Per-box loss (M, 4), (M, 4) -> (M,): "iou" = -ln max(IoU, eps); "giou" = 1 - GIoU,
    union and enclosing area floored at eps as mmdet's ``GIoULoss`` (dsla §3.2)."""
    if loss_type == "iou":
        return -aligned_iou(pred_boxes, target_boxes, eps).clamp(min=eps).log()
    if loss_type == "giou":
        return 1 - iou_and_giou(pred_boxes, target_boxes, eps)[1]
    raise ValueError(f"MODEL.DSLA.IOU_LOSS_TYPE must be one of {BOX_LOSS_TYPES}, got {loss_type!r}")


def soft_targets(smooth: Tensor, ious: Tensor, iou_coupling: bool = True, iou_only: bool = False) -> Tensor:
    """Classification target t of positives from s and the predicted IoU u (M,) -> (M,):
    u with ``iou_only``, else u * s with ``iou_coupling``, else s."""
    if iou_only:
        return ious
    return ious * smooth if iou_coupling else smooth


def dsla_loss(
    predictions: DensePredictions,
    assignments: Sequence[SmoothAssignment],
    cells: Tensor,
    box_coder: LTRBCoder,
    gamma: float = 2.0,
    cls_loss_weight: float = 2.0,
    reg_loss_weight: float = 1.0,
    loss_type: str = "iou",
    eps: float = 1e-6,
    iou_coupling: bool = True,
    iou_only: bool = False,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4) (l, t, r, b), float32.
        assignments: N per-image ``SmoothAssignment``.
        cells: (R, 4) ``PointGenerator`` cells, shared by all images.
        box_coder: decodes ``bbox_reg`` (pixels, or strides with NORM_REG_TARGETS).
        gamma: QFL beta (MODEL.DSLA.LOSS_GAMMA).
        cls_loss_weight, reg_loss_weight: lambda_cls, lambda_reg.
        loss_type, eps: box loss (MODEL.DSLA.IOU_LOSS_TYPE, IOU_LOSS_EPS); eps
            also floors the union of the coupling IoU.
        iou_coupling, iou_only: the soft-target switches (:func:`soft_targets`).
    Returns:
        {"loss_cls": lambda_cls * sum QFL / max(mean_ranks sum t, 1),
         "loss_bbox": lambda_reg * sum_pos s * loss / max(mean_ranks sum_pos s, 1)}.
    """
    n, r, c = predictions.cls_logits.shape
    labels = torch.stack([a.labels for a in assignments])  # (N, R)
    matched_boxes = torch.stack([a.matched_boxes for a in assignments])  # (N, R, 4)
    smooth = torch.stack([a.smooth for a in assignments])  # (N, R)
    pos = smooth > 0

    pred_boxes = box_coder.decode(predictions.bbox_reg[pos], cells.expand(n, r, 4)[pos])  # (M, 4)
    target_boxes = matched_boxes[pos]
    pos_smooth = smooth[pos]
    with torch.no_grad():
        pos_targets = soft_targets(pos_smooth, aligned_iou(pred_boxes, target_boxes, eps), iou_coupling, iou_only)
    targets = torch.zeros_like(smooth).masked_scatter_(pos, pos_targets)  # (N, R)
    # A positive whose predicted box misses its gt (t = 0) is a classification negative.
    cls_labels = torch.where(targets > 0, labels, torch.zeros_like(labels))

    cls_norm = reduce_mean(targets.sum()).clamp(min=1.0)
    box_norm = reduce_mean(pos_smooth.sum()).clamp(min=1.0)
    loss_cls = quality_focal_loss(
        predictions.cls_logits.reshape(n * r, c), cls_labels.reshape(-1), targets.reshape(-1), gamma
    ).sum()
    # With no positive the sum is over an empty selection of bbox_reg: 0, still in the graph.
    loss_bbox = (box_loss(pred_boxes, target_boxes, loss_type, eps) * pos_smooth).sum()
    return {"loss_cls": loss_cls * cls_loss_weight / cls_norm, "loss_bbox": loss_bbox * reg_loss_weight / box_norm}
