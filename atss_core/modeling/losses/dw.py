"""DW losses (dw.md §6): positive classification and localisation weighted by w_pos, negative
classification weighted by P_neg x s^gamma, all on the joint score s = cls x objectness.

The weights come detached from :func:`atss_core.modeling.assigners.dw.dw_assign`;
here s and the GIoU loss L of the inside pairs carry the gradient (s also
inside the s^gamma importance). Normalisers: the mean number of gts and the
mean sum of (1 - P_neg) over ranks, each floored at 1 after averaging; both
collectives run on every rank every iteration (spec C21).
"""
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from atss_core.modeling.assigners.dw import DWAssignment
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.utils import DensePredictions, joint_scores
from atss_core.structures.boxlist_ops import iou_and_giou
from atss_core.utils.comm import reduce_mean


def dw_loss_terms(
    scores: Tensor,
    pos_scores: Tensor,
    pair_losses: Tensor,
    pos_weights: Tensor,
    neg_prob: Tensor,
    reg_score_exp: float = 5.0,
    neg_gamma: float = 2.0,
    pos_cls_weight: float = 0.25,
    loc_weight: float = 0.25,
    neg_cls_weight: float = 1.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Un-normalised sums (cls_pos, loc, neg) of the three DW terms.

    Args:
        scores (..., C): joint scores s of all points (with gradient).
        pos_scores (M,): s(n, c_j) of the inside pairs (with gradient).
        pair_losses (M,): GIoU loss L(n, j) of the pairs (with gradient).
        pos_weights (M,), neg_prob (..., C): detached weights.
    Returns:
        cls_pos = pos_cls_weight * sum w BCE(s(n, c_j), 1);
        loc = loc_weight * sum w BCE(exp(-k L), 1) = loc_weight * sum w k L
            (the same while k L < 100, BCE's log clamp: always with the defaults, k L <= 10);
        neg = neg_cls_weight * sum P_neg s^gamma BCE(s, 0).
    BCE is ``F.binary_cross_entropy`` (log clamped at -100), as the original.
    """
    cls_pos = (pos_weights * F.binary_cross_entropy(pos_scores, torch.ones_like(pos_scores), reduction="none")).sum()
    loc = (pos_weights * reg_score_exp * pair_losses).sum()
    neg_bce = F.binary_cross_entropy(scores, torch.zeros_like(scores), reduction="none")
    neg = (neg_prob * scores.pow(neg_gamma) * neg_bce).sum()
    return pos_cls_weight * cls_pos, loc_weight * loc, neg_cls_weight * neg


def dw_loss(
    predictions: DensePredictions,
    assignments: Sequence[DWAssignment],
    cells: Tensor,
    box_coder: LTRBCoder,
    giou_loss_weight: float = 1.0,
    reg_score_exp: float = 5.0,
    neg_gamma: float = 2.0,
    pos_cls_weight: float = 0.25,
    loc_weight: float = 0.25,
    neg_cls_weight: float = 1.0,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4) (refined l, t, r, b
            in pixels), centerness (N, R) objectness logits, float32.
        assignments: N per-image ``DWAssignment``.
        cells: (R, 4) ``PointGenerator`` cells, shared by all images.
        box_coder: decodes ``bbox_reg`` (pixels).
        the rest: MODEL.DW.{GIOU_LOSS_WEIGHT, REG_SCORE_EXP, NEG_GAMMA, *_WEIGHT}.
    Returns:
        {"loss_cls_pos": cls_pos / N_pos, "loss_loc": loc / N_pos, "loss_cls_neg": neg / N_neg},
        N_pos = max(1, mean over ranks of #gts), N_neg = max(1, mean over ranks of sum (1 - P_neg)).
    """
    n, r, c = predictions.cls_logits.shape
    scores = joint_scores(predictions).reshape(n * r, c)
    # Pairs of all images, rows into the flattened (N * R) batch.
    rows = torch.cat([a.pos_points + i * r for i, a in enumerate(assignments)])
    gts = [(a.gt_boxes[a.pos_gts], a.gt_labels[a.pos_gts]) for a in assignments]
    target_boxes = torch.cat([b for b, _ in gts])
    channels = torch.cat([lab for _, lab in gts]).long() - 1
    pos_weights = torch.cat([a.pos_weights for a in assignments])
    neg_prob = torch.cat([a.neg_prob for a in assignments])

    # With no gt the pairs are empty: zero terms that keep the box branch in the graph.
    pred_boxes = box_coder.decode(predictions.bbox_reg.reshape(n * r, 4)[rows], cells[rows % r])
    pair_losses = giou_loss_weight * (1 - iou_and_giou(pred_boxes, target_boxes)[1])
    cls_pos, loc, neg = dw_loss_terms(
        scores, scores[rows, channels], pair_losses, pos_weights, neg_prob,
        reg_score_exp, neg_gamma, pos_cls_weight, loc_weight, neg_cls_weight,
    )
    num_gts = sum(len(a.gt_labels) for a in assignments)
    num_pos = reduce_mean(scores.new_tensor(float(num_gts))).clamp(min=1.0)
    num_neg = reduce_mean((1 - neg_prob).sum()).clamp(min=1.0)
    return {"loss_cls_pos": cls_pos / num_pos, "loss_loc": loc / num_pos, "loss_cls_neg": neg / num_neg}
