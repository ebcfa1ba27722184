"""O2F one-to-few assignment (o2f.md §4; strongwolf/o2f ``O2FHead._get_target_single_o2o``) and
the schedule of its soft-label scale T (o2f.md §4.1, §9.3).

Glossary: A points of one image (levels concatenated), G gts, C classes, K top-k per gt.
For each gt the candidates are the points strictly inside its centre region on any
level; they are ranked by the POTO quality prob^(1 - alpha) * IoU^alpha and the top K
kept. A point kept by several gts goes to the one of highest quality. Per gt, the best
point it keeps is its one positive (target 1); the others are soft anchors whose target
is T * prob / (largest prob among them). Everything is broadcast over (A, G): no loop
over gts or levels. Continuous geometry (no +1).
"""
import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from atss_core.structures.boxlist_ops import iou_and_giou

from .atss import box_centres, ltrb_to_boxes
from .fcos import centre_regions

SCHEDULE_MODES = ("epoch", "linear")
# Guard of the soft-label division (o2f §4.2-3); P_g is a product of sigmoids, never 0 in practice.
_MIN_SOFT_PROB = 1e-12


class OneToFew(NamedTuple):
    """Per-point result of :func:`o2f_assign`.

    labels (A,) int64: class 1..C of the assigned gt, 0 background.
    matched_idx (A,) int64: the assigned gt, -1 background.
    soft_labels (A,): 1 for a gt's main positive, T prob / P_g for its soft anchors, 0 elsewhere.
    soft_weights (A,): main_weight, soft_weight or 0.
    """

    labels: Tensor
    matched_idx: Tensor
    soft_labels: Tensor
    soft_weights: Tensor


class O2FAssignment(NamedTuple):
    """Per-point targets of one image: :class:`OneToFew` plus matched_boxes (A, 4), the
    assigned gt box (zeros for background)."""

    labels: Tensor
    matched_idx: Tensor
    matched_boxes: Tensor
    soft_labels: Tensor
    soft_weights: Tensor


def soft_label_scale(
    iters_done: int,
    max_iter: int,
    t_start: float = 0.6,
    t_end: float = 0.2,
    epochs: int = 12,
    mode: str = "epoch",
    iters_per_epoch: float = 0,
) -> float:
    """T after ``iters_done`` optimizer steps of ``max_iter`` (o2f §9.3).

    "epoch": the original's step per epoch, e = min(floor(it / ipe), E - 1),
    T = t_start + (t_end - t_start) e / (E - 1), with ipe = iters_per_epoch or
    max_iter / epochs; E = 1 gives t_start. "linear": T moves smoothly,
    t_start + (t_end - t_start) min(it / (max_iter - 1), 1).
    """
    if mode not in SCHEDULE_MODES:
        raise ValueError(f"MODEL.O2F.SCHEDULE_MODE must be one of {SCHEDULE_MODES}, got {mode!r}")
    if mode == "linear":
        return t_start + (t_end - t_start) * min(iters_done / max(max_iter - 1, 1), 1.0)
    if epochs <= 1:
        return t_start
    ipe = iters_per_epoch or max_iter / epochs
    epoch = min(math.floor(iters_done / ipe), epochs - 1) if ipe > 0 else 0
    return t_start + (t_end - t_start) * epoch / (epochs - 1)


def candidate_region(cells: Tensor, gt_boxes: Tensor, radius: float = 1.5) -> Tensor:
    """Points strictly inside each gt's centre region on their own level (o2f §4 step 2).

    cells (A, 4): ``PointGenerator`` cells (centre = point, x2 - x1 = stride);
    gt_boxes (G, 4) xyxy -> (A, G) bool. The region is the gt centre +- radius *
    stride, clipped to the gt; radius 0 = the whole gt. A point on its border is out.
    """
    x, y = box_centres(cells)
    if radius > 0:
        regions = centre_regions(gt_boxes, cells[:, 2] - cells[:, 0], radius)
    else:
        regions = gt_boxes
    return ltrb_to_boxes(x[:, None], y[:, None], regions).min(dim=-1).values > 0


def poto_quality(prob: Tensor, iou: Tensor, alpha: float = 0.8) -> Tensor:
    """POTO matching quality prob^(1 - alpha) * IoU^alpha, elementwise (o2f §4 step 1)."""
    return prob.pow(1 - alpha) * iou.pow(alpha)


def _background(num_points: int, like: Tensor) -> OneToFew:
    zeros = torch.zeros(num_points, dtype=torch.int64, device=like.device)
    return OneToFew(zeros, zeros - 1, like.new_zeros(num_points), like.new_zeros(num_points))


@torch.no_grad()
def o2f_assign(
    prob: Tensor,
    iou: Tensor,
    inside: Tensor,
    gt_labels: Tensor,
    topk: int = 7,
    soft_t: float = 0.6,
    alpha: float = 0.8,
    main_weight: float = 1.0,
    soft_weight: float = 0.4,
) -> OneToFew:
    """One positive plus soft anchors per gt (o2f §4 steps 4-6).

    Args:
        prob (A, G): joint probability sigmoid(cls at the gt's class) x sigmoid(obj).
        iou (A, G): IoU of each point's predicted box with each gt.
        inside (A, G): :func:`candidate_region`.
        gt_labels (G,): classes 1..C.
        topk: K; a gt keeps min(K, #{inside, IoU > 0}) points, fewer if other gts
            take some (a gt without any point with IoU > 0 gets no positive).
        soft_t: T, the soft label of the soft anchor of largest prob.
        alpha: POTO exponent of the IoU in the quality.
    Ties (equal qualities) go to the lower point index; tests avoid them.
    """
    num_points, num_gts = prob.shape
    if num_gts == 0 or num_points == 0:
        return _background(num_points, prob)
    iou = torch.where(inside, iou, torch.zeros_like(iou))
    quality = poto_quality(prob, iou, alpha)
    k = (iou > 0).sum(dim=0).clamp(max=topk)  # (G,)
    top_q, top_idx = quality.topk(min(topk, num_points), dim=0)  # (K, G)
    ranks = torch.arange(len(top_q), device=prob.device)[:, None]
    top_q = torch.where(ranks < k, top_q, torch.zeros_like(top_q))
    matching = torch.zeros_like(quality).scatter_(0, top_idx, top_q)  # (A, G)
    best_q, gt_of = matching.max(dim=1)
    assigned = best_q > 0

    # Main positive of each gt: its assigned point of highest quality, lowest index on ties.
    # The per-gt reductions scatter every row, unassigned ones with a neutral value
    # (qualities and probabilities are >= 0), so no boolean selection syncs with the device.
    points = torch.arange(num_points, device=prob.device)
    gt_best = best_q.new_zeros(num_gts).scatter_reduce(0, gt_of, best_q, "amax")
    is_best = assigned & (best_q == gt_best[gt_of])
    first = torch.full((num_gts,), num_points, device=prob.device)
    first = first.scatter_reduce(0, gt_of, torch.where(is_best, points, num_points), "amin")
    main = is_best & (points == first[gt_of])
    soft = assigned & ~main

    point_prob = prob.gather(1, gt_of[:, None]).squeeze(1)  # (A,) at the assigned gt
    soft_prob = torch.where(soft, point_prob, torch.zeros_like(point_prob))
    soft_max = point_prob.new_zeros(num_gts).scatter_reduce(0, gt_of, soft_prob, "amax")
    # T * (p / P_g), not (T * p) / P_g: the best soft anchor gets exactly T.
    soft_labels = soft_t * (point_prob / soft_max.clamp(min=_MIN_SOFT_PROB)[gt_of])
    zeros = torch.zeros_like(point_prob)
    weights = torch.where(soft, torch.full_like(zeros, soft_weight), zeros)
    return OneToFew(
        torch.where(assigned, gt_labels[gt_of].long(), torch.zeros_like(gt_of)),
        torch.where(assigned, gt_of, torch.full_like(gt_of, -1)),
        torch.where(main, torch.ones_like(zeros), torch.where(soft, soft_labels, zeros)),
        torch.where(main, torch.full_like(zeros, main_weight), weights),
    )


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU matrix (A, 4), (G, 4) xyxy -> (A, G): continuous areas, union >= eps (mmdet ``bbox_overlaps``)."""
    return iou_and_giou(boxes1[:, None], boxes2[None], eps)[0]


@torch.no_grad()
def o2f_assign_points(
    cells: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    joint_prob: Tensor,
    pred_boxes: Tensor,
    topk: int = 7,
    soft_t: float = 0.6,
    alpha: float = 0.8,
    center_sampling_radius: float = 1.5,
    main_weight: float = 1.0,
    soft_weight: float = 0.4,
) -> O2FAssignment:
    """:func:`o2f_assign` on one image's points and detached predictions (o2f §4 steps 1-7).

    Args:
        cells (A, 4): ``PointGenerator`` cells of all levels; num_per_level [L]
            (unused: every level is a candidate for every gt).
        gt_boxes (G, 4) xyxy; gt_labels (G,) in 1..C.
        joint_prob (A, C): sigmoid(cls) x sigmoid(obj) of the image.
        pred_boxes (A, 4): decoded predicted boxes (xyxy, pixels).
    G = 0 gives all background with zero boxes, targets and weights.
    """
    inside = candidate_region(cells, gt_boxes, center_sampling_radius)
    # Only points inside some gt's region can be assigned (o2f §4 step 3): match those alone.
    rows = inside.any(dim=1).nonzero().squeeze(1)
    prob = joint_prob[rows][:, gt_labels.long() - 1]  # (rows, G)
    iou = pairwise_iou(pred_boxes[rows], gt_boxes)
    matched = o2f_assign(prob, iou, inside[rows], gt_labels, topk, soft_t, alpha, main_weight, soft_weight)
    result = OneToFew(*(whole.index_copy(0, rows, part) for whole, part in zip(_background(len(cells), prob), matched)))
    # matched_idx -1 (background) reads the appended zero box.
    padded = torch.cat([gt_boxes.to(pred_boxes.dtype), pred_boxes.new_zeros(1, 4)])
    boxes = padded[result.matched_idx]
    return O2FAssignment(result.labels, result.matched_idx, boxes, result.soft_labels, result.soft_weights)
