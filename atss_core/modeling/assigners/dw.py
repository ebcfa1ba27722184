"""DW (Dual Weighting, Li et al., CVPR 2022, strongwolf/DW) soft assignment: the detached
half of its weights (dw.md §3-5).

Glossary: A points of one image (levels concatenated), G gts, C classes, M
inside (point, gt) pairs. Every point of every level that lies strictly inside
a gt is a candidate of that gt (no scale ranges, no top-k). Continuous
geometry (no +1), mmdet ``bbox_overlaps`` eps rules.

Split between assignment and loss: DW's weights are functions of the current
predictions. Everything that carries no gradient is computed here, per image,
from its detached predictions: the centre prior, the positive weight w_pos of
every inside pair (its consistency t = p_cls * p_loc is detached, both in the
numerator and the normaliser) and the negative probability P_neg (IoU-based).
The loss recomputes, with gradient, only the joint score s and the GIoU loss L
of the inside pairs.
"""
from typing import NamedTuple

import torch
from torch import Tensor

from atss_core.structures.boxlist_ops import iou_and_giou

from .atss import box_centres, ltrb_to_boxes


class DWAssignment(NamedTuple):
    """Detached targets and weights of one image.

    gt_boxes (G, 4) xyxy; gt_labels (G,) in 1..C.
    pos_points (M,), pos_gts (M,) int64: the inside pairs (point n, gt j), n-major.
    pos_weights (M,): w_pos(n, j) of those pairs (zero outside every gt).
    neg_prob (A, C): P_neg(n, c) in (0, 1], 1 where no gt of class c contains n.
    """

    gt_boxes: Tensor
    gt_labels: Tensor
    pos_points: Tensor
    pos_gts: Tensor
    pos_weights: Tensor
    neg_prob: Tensor


def points_inside(points: Tensor, gt_boxes: Tensor) -> Tensor:
    """Points (A, 2) strictly inside gts (G, 4): min(l, t, r, b) > 0 -> (A, G) bool."""
    return ltrb_to_boxes(points[:, :1], points[:, 1:], gt_boxes).min(dim=-1).values > 0


def center_prior(
    points: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    inside: Tensor,
    mean: float = 0.0,
    sigma: float = 1.11,
    soft: bool = True,
    hard_thresh: float = 0.3,
) -> Tensor:
    """Gaussian prior of every point for every gt, in units of the point's stride -> (A, G).

    pi = exp(-((px - cx)/s - mean)^2 / 2 sigma^2) * exp(-((py - cy)/s - mean)^2 / 2 sigma^2),
    0 where not ``inside`` (A, G). The hard variant (``soft`` False) is
    1[pi > hard_thresh], also before the inside mask. Fixed, not learnt: the
    same mean and sigma for every class and level (DW's frozen CenterPrior).
    Args: points (A, 2) x, y; strides (A,).
    """
    cx, cy = box_centres(gt_boxes)
    dx = (points[:, :1] - cx) / strides[:, None] - mean
    dy = (points[:, 1:] - cy) / strides[:, None] - mean
    prior = torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    if not soft:
        prior = (prior > hard_thresh).to(prior.dtype)
    return torch.where(inside, prior, torch.zeros_like(prior))


def positive_weights(
    consistency: Tensor, prior: Tensor, exp_num: float = 5.0, exp_den: float = 3.0, eps: float = 1e-12
) -> Tensor:
    """w_pos = e^{exp_num t} t pi / max(eps, sum over points of e^{exp_den t} t pi), per gt.

    consistency t (A, G) = p_cls * p_loc (detached); prior pi (A, G), zero
    outside the gt -> (A, G). The 5-vs-3 exponents are DW's (its issues #3,
    #23: they enlarge the positive loss), so a gt's weights sum to more than 1.
    """
    base = consistency * prior
    norm = (torch.exp(exp_den * consistency) * base).sum(dim=0).clamp(min=eps)
    return torch.exp(exp_num * consistency) * base / norm


def negative_bag_weights(
    ious: Tensor, inside: Tensor, iou_thresh: float = 0.5, alpha: float = 2.0, eps: float = 1e-12
) -> Tensor:
    """Probability m(n, j) that inside point n is a negative for gt j, from its IoU -> (A, G).

    f(x) = (x^alpha - 1) / (thresh^alpha - 1) (f(thresh) = 1, f(1) = 0); over
    the bag of gt j, f_lo = min f and f_hi = min(1, max f);
    m = (f - f_lo + eps) / (f_hi - f_lo + eps) where IoU >= thresh, else 1
    (and 1 for pairs that are not inside). The bag's best-IoU point gets
    ~eps/(f_hi - f_lo); a one-point bag gets 1.
    Args: ious (A, G) IoU of the predicted box of n with gt j; inside (A, G).
    """
    f = (ious.pow(alpha) - 1) / (iou_thresh ** alpha - 1)
    non_empty = inside.any(dim=0)
    inf = torch.full_like(f, float("inf"))
    f_lo = torch.where(inside, f, inf).amin(dim=0).where(non_empty, torch.zeros_like(non_empty, dtype=f.dtype))
    f_hi = torch.where(inside, f, -inf).amax(dim=0).clamp(max=1.0).where(non_empty, torch.ones_like(f_lo))
    m = (f - f_lo + eps) / (f_hi - f_lo + eps)
    return torch.where(inside & (ious >= iou_thresh), m, torch.ones_like(m))


def negative_probability(bag_weights: Tensor, inside: Tensor, gt_labels: Tensor, num_classes: int) -> Tensor:
    """Scatter m (A, G) into P_neg (A, C): P_neg[n, c_j] = m(n, j) for inside pairs, else 1.

    A point inside several gts of one class takes the value of the gt with the
    highest index (the outcome of the original's sequential indexed write,
    whose order PyTorch leaves undefined). gt_labels (G,) in 1..C.
    """
    num_points, num_gts = inside.shape
    rank = torch.arange(1, num_gts + 1, device=inside.device).expand(num_points, num_gts)
    rank = torch.where(inside, rank, torch.zeros_like(rank))
    channels = (gt_labels.long() - 1).expand(num_points, num_gts)
    winner = rank.new_zeros(num_points, num_classes).scatter_reduce(1, channels, rank, "amax")  # 0 = no gt
    padded = torch.cat([bag_weights.new_ones(num_points, 1), bag_weights], dim=1)
    return padded.gather(1, winner)


@torch.no_grad()
def dw_assign(
    cells: Tensor,
    num_per_level,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor,
    scores: Tensor,
    prior_mean: float = 0.0,
    prior_sigma: float = 1.11,
    soft_prior: bool = True,
    hard_prior_thresh: float = 0.3,
    giou_loss_weight: float = 1.0,
    reg_score_exp: float = 5.0,
    pos_exp_num: float = 5.0,
    pos_exp_den: float = 3.0,
    neg_iou_thresh: float = 0.5,
    neg_alpha: float = 2.0,
    eps: float = 1e-12,
) -> DWAssignment:
    """Detached DW weights of one image (dw.md §3-5).

    Args:
        cells (A, 4): ``PointGenerator`` cells (centre = point, x2 - x1 = stride);
            num_per_level is unused (all levels are candidates).
        gt_boxes (G, 4) xyxy; gt_labels (G,) in 1..C.
        pred_boxes (A, 4): decoded (refined) predicted boxes, detached.
        scores (A, C): joint score sigmoid(cls) * sigmoid(objectness), detached.
        the rest: MODEL.DW.* (PRIOR_*, GIOU_LOSS_WEIGHT, REG_SCORE_EXP, POS_EXP_*,
            NEG_IOU_THRESH, NEG_ALPHA, EPS).
    """
    points = torch.stack(box_centres(cells), dim=1)
    strides = cells[:, 2] - cells[:, 0]
    inside = points_inside(points, gt_boxes)
    prior = center_prior(points, strides, gt_boxes, inside, prior_mean, prior_sigma, soft_prior, hard_prior_thresh)
    ious, gious = iou_and_giou(pred_boxes[:, None], gt_boxes[None])
    ious = torch.where(inside, ious, torch.zeros_like(ious))
    p_loc = torch.exp(-reg_score_exp * giou_loss_weight * (1 - gious))
    p_cls = scores[:, gt_labels.long() - 1]
    weights = positive_weights(p_cls * p_loc, prior, pos_exp_num, pos_exp_den, eps)
    bag = negative_bag_weights(ious, inside, neg_iou_thresh, neg_alpha, eps)
    pos_points, pos_gts = inside.nonzero(as_tuple=True)
    return DWAssignment(
        gt_boxes,
        gt_labels,
        pos_points,
        pos_gts,
        weights[pos_points, pos_gts],
        negative_probability(bag, inside, gt_labels, scores.shape[1]),
    )
