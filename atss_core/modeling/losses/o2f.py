"""O2F losses (o2f.md §5; strongwolf/o2f ``sfl.py``, ``O2FHead.loss``): a soft focal loss on the
joint probability sigmoid(cls) x sigmoid(obj), and GIoU weighted by the target centerness.

The objectness branch is trained only through the joint probability: there is no
centerness loss. Both normalisers are averaged over ranks on every rank every
iteration, before anything that depends on the local batch (spec C21).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from atss_core.modeling.assigners.o2f import O2FAssignment
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.utils import DensePredictions, joint_scores
from atss_core.structures.boxlist_ops import iou_and_giou
from atss_core.utils.comm import reduce_mean

from .atss import centerness_targets


def clamped_giou_loss(pred_boxes: Tensor, target_boxes: Tensor, eps: float = 1e-6) -> Tensor:
    """1 - GIoU of aligned xyxy boxes (M, 4), (M, 4) -> (M,), as mmdet's ``giou_loss``: union
    and enclosing area clamped to >= eps rather than increased by eps (``giou_loss`` of the
    ATSS family), so equal boxes cost exactly 0. Continuous areas."""
    return 1 - iou_and_giou(pred_boxes, target_boxes, eps)[1]


def soft_focal_loss(
    prob: Tensor,
    labels: Tensor,
    soft_labels: Tensor,
    soft_weights: Tensor,
    neg_weight: float = 0.75,
    gamma: float = 2.0,
) -> Tensor:
    """Per-entry loss (M, C) on probabilities (o2f §5.1).

    prob (M, C) in [0, 1]; labels (M,) 1..C assigned, 0 background; soft_labels t
    and soft_weights w (M,). Entry (i, labels_i - 1) of an assigned row is
    w BCE(P, t), with no modulating factor; every other entry is the negative
    term neg_weight P^gamma BCE(P, 0). Logs are clamped at -100 as in
    ``F.binary_cross_entropy``.
    """
    num_classes = prob.shape[-1]
    target_class = F.one_hot(labels, num_classes + 1)[:, 1:].bool()  # (M, C); background has no column
    targets = target_class * soft_labels[:, None]
    bce = F.binary_cross_entropy(prob, targets.to(prob.dtype), reduction="none")
    return torch.where(target_class, soft_weights[:, None] * bce, neg_weight * prob.pow(gamma) * bce)


def o2f_loss(
    predictions: DensePredictions,
    assignments: Sequence[O2FAssignment],
    cells: Tensor,
    box_coder: LTRBCoder,
    neg_weight: float = 0.75,
    gamma: float = 2.0,
    cls_loss_weight: float = 1.0,
    reg_loss_weight: float = 2.0,
    eps: float = 1e-6,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4) (l, t, r, b for
            ``box_coder``), centerness (N, R) = objectness logits; float32.
        assignments: N per-image :class:`O2FAssignment`.
        cells: (R, 4) ``PointGenerator`` cells, shared by all images.
        neg_weight, gamma: the negative term's factor and exponent.
        eps: GIoU eps; also floors the box normaliser.
    Returns:
        {"loss_cls": cls_loss_weight * sum / max(mean_ranks #assigned, 1),
         "loss_bbox": reg_loss_weight * sum_assigned w (1 - GIoU) / max(mean_ranks sum w, eps)},
        w = centerness of the target distances. Main positives and soft anchors
        both count as assigned.
    """
    n, r, c = predictions.cls_logits.shape
    labels = torch.stack([a.labels for a in assignments])  # (N, R)
    soft_labels = torch.stack([a.soft_labels for a in assignments])
    soft_weights = torch.stack([a.soft_weights for a in assignments])
    matched_boxes = torch.stack([a.matched_boxes for a in assignments])  # (N, R, 4)
    assigned = labels > 0
    points = cells.expand(n, r, 4)[assigned]  # (M, 4)
    target_boxes = matched_boxes[assigned]
    centerness = centerness_targets(points, target_boxes)

    cls_norm = reduce_mean(assigned.sum()).clamp(min=1.0)
    box_norm = reduce_mean(centerness.sum()).clamp(min=eps)
    prob = joint_scores(predictions).reshape(n * r, c)
    loss_cls = soft_focal_loss(
        prob, labels.reshape(-1), soft_labels.reshape(-1), soft_weights.reshape(-1), neg_weight, gamma
    ).sum()
    # No assigned point: a sum over an empty selection of bbox_reg, i.e. 0 that keeps the
    # graph. The original added the raw sum of all distances there (o2f §5.2).
    pred_boxes = box_coder.decode(predictions.bbox_reg[assigned], points)
    loss_bbox = (clamped_giou_loss(pred_boxes, target_boxes, eps) * centerness).sum()
    return {"loss_cls": loss_cls * cls_loss_weight / cls_norm, "loss_bbox": loss_bbox * reg_loss_weight / box_norm}
