"""ATSS label assignment and its three POSITIVE_TYPE ablations (atss_heads §5).

Pure functions of anchors and gts. Glossary: A anchors of one image (levels
concatenated), L levels, G gts, K candidates per gt. Every IoU here uses the
+1 pixel convention of sfzhang15/ATSS (head-internal, independent of
MODEL.BOX_OFFSET), and every "centre inside gt" test is min(l, t, r, b) > 0.01.
"""
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from atss_core.structures.boxlist_ops import box_iou

from .max_iou import Matcher

INSIDE_EPS = 0.01
# SSC: per-level ranges of max(l, t, r, b), both ends inclusive, for exactly 5 levels.
SSC_SIZE_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, float("inf")))


class AnchorAssignment(NamedTuple):
    """Per-anchor targets of one image.

    labels (A,) int64: 1..C class, 0 background, -1 ignore.
    matched_idx (A,) int64: gt index of positives (labels > 0), else -1.
    matched_boxes (A, 4): the matched gt box of positives, zeros elsewhere.
    """

    labels: Tensor
    matched_idx: Tensor
    matched_boxes: Tensor


def box_centres(boxes: Tensor) -> Tuple[Tensor, Tensor]:
    """(..., 4) xyxy -> cx, cy (...,)."""
    return (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2


def ltrb_to_boxes(cx: Tensor, cy: Tensor, gt_boxes: Tensor) -> Tensor:
    """Distances from points to box sides: cx, cy (..., G) with boxes (G, 4), or any
    shape broadcasting to (..., G, 4) -> (..., G, 4)."""
    return torch.stack(
        (cx - gt_boxes[..., 0], cy - gt_boxes[..., 1], gt_boxes[..., 2] - cx, gt_boxes[..., 3] - cy), dim=-1
    )


def centres_inside(cx: Tensor, cy: Tensor, gt_boxes: Tensor) -> Tensor:
    """Whether points (..., G) lie inside the gt of their column: min(l, t, r, b) > 0.01."""
    return ltrb_to_boxes(cx, cy, gt_boxes).min(dim=-1).values > INSIDE_EPS


def atss_thresholds(*cand_ious: Tensor) -> Tensor:
    """Per-gt threshold over the candidates: sum of the means + sum of the unbiased stds.

    Each argument is (K, G) -> (G,). One matrix is ATSS (mean + std); Dynamic
    ATSS passes predicted and anchor IoUs, so it adds the two stds, which is
    not the std of their sum (atss_heads §8.2).
    """
    return sum(c.mean(dim=0) for c in cand_ious) + sum(c.std(dim=0) for c in cand_ious)


def centre_distances(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """Euclidean distance between anchor and gt centres: (A, 4), (G, 4) -> (A, G)."""
    acx, acy = box_centres(anchors)
    gcx, gcy = box_centres(gt_boxes)
    return torch.hypot(acx[:, None] - gcx[None], acy[:, None] - gcy[None])


def _from_gt_index(gt_idx: Tensor, is_pos: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> AnchorAssignment:
    """Targets from a per-anchor gt index (A,) and positive mask (A,)."""
    labels = torch.where(is_pos, gt_labels[gt_idx].long(), torch.zeros_like(gt_idx))
    matched_idx = torch.where(is_pos, gt_idx, torch.full_like(gt_idx, -1))
    matched_boxes = torch.where(is_pos[:, None], gt_boxes[gt_idx], torch.zeros_like(gt_boxes[gt_idx]))
    return AnchorAssignment(labels, matched_idx, matched_boxes)


def best_positive_gt(score: Tensor, is_pos: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> AnchorAssignment:
    """Each anchor takes, among the gts it is positive for, the one with the highest score.

    score, is_pos (A, G). Exact ties go to the lowest gt index.
    """
    masked = torch.where(is_pos, score, torch.full_like(score, -float("inf")))
    gt_idx = masked.argmax(dim=1)
    return _from_gt_index(gt_idx, is_pos.any(dim=1), gt_boxes, gt_labels)


def background(num_anchors: int, gt_boxes: Tensor) -> AnchorAssignment:
    """All anchors negative (the G = 0 case)."""
    zeros = torch.zeros(num_anchors, dtype=torch.int64, device=gt_boxes.device)
    return AnchorAssignment(zeros, zeros - 1, gt_boxes.new_zeros(num_anchors, 4))


@torch.no_grad()
def atss_candidates(
    distances: Tensor, num_per_level: Sequence[int], k_per_level: int
) -> Tensor:
    """Per gt, the ``k_per_level`` anchors of each level nearest to the gt centre.

    distances (A, G) -> candidate anchor indices (K, G), K = sum_l min(k, n_l).
    Order among tied distances is torch.topk's.
    """
    cands, start = [], 0
    for n in num_per_level:
        k = min(k_per_level, n)
        cands.append(distances[start:start + n].topk(k, dim=0, largest=False).indices + start)
        start += n
    return torch.cat(cands, dim=0)


@torch.no_grad()
def adaptive_positives(
    anchors: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor, ious: Sequence[Tensor], k_per_level: int
) -> Tensor:
    """ATSS selection on one or more (A, G) IoU matrices, summed.

    Candidates: per level, the ``k_per_level`` anchors whose centres are nearest
    the gt centre. A candidate is positive when the sum of its IoUs is >=
    ``atss_thresholds`` of them and its centre is inside the gt. -> is_pos (A, G).
    """
    cand = atss_candidates(centre_distances(anchors, gt_boxes), num_per_level, k_per_level)  # (K, G)
    cand_ious = [iou.gather(0, cand) for iou in ious]
    acx, acy = box_centres(anchors)
    cand_pos = (sum(cand_ious) >= atss_thresholds(*cand_ious)[None]) & centres_inside(acx[cand], acy[cand], gt_boxes)
    # Within one gt column the candidates are distinct anchors, so scatter is exact.
    return torch.zeros_like(ious[0], dtype=torch.bool).scatter_(0, cand, cand_pos)


@torch.no_grad()
def atss_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    topk: int = 9,
    num_anchors_per_loc: int = 1,
) -> AnchorAssignment:
    """Adaptive training sample selection (atss_heads §5.1).

    1. Candidates: per level, the topk * num_anchors_per_loc anchors whose
       centres are nearest the gt centre -> (K, G).
    2. Threshold per gt: mean + unbiased std of the candidates' IoUs.
    3. Positive: candidate IoU >= threshold and anchor centre inside the gt.
    4. An anchor positive for several gts takes the one of highest IoU.

    Args:
        anchors (A, 4) xyxy, levels concatenated; num_per_level [L].
        gt_boxes (G, 4) xyxy; gt_labels (G,) in 1..C.
    """
    if len(gt_boxes) == 0:
        return background(len(anchors), gt_boxes)
    ious = box_iou(anchors, gt_boxes, box_offset=1)  # (A, G)
    is_pos = adaptive_positives(anchors, num_per_level, gt_boxes, [ious], topk * num_anchors_per_loc)
    return best_positive_gt(ious, is_pos, gt_boxes, gt_labels)


def per_level_columns(
    values: Sequence[Sequence[float]], num_per_level: Sequence[int], like: Tensor
) -> Tuple[Tensor, ...]:
    """Per-level rows [L] of k numbers -> k columns (A,) in ``like``'s dtype and device,
    each point carrying its level's value.

    Built from fills on the device: a tensor made from a Python list (and a
    ``repeat_interleave`` by a device tensor) would make the host wait for the device.
    """
    return tuple(torch.cat([like.new_full((n,), v) for n, v in zip(num_per_level, col)]) for col in zip(*values))


def smallest_gt_in_range(
    cx: Tensor,
    cy: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    size_ranges: Sequence[Tuple[float, float]],
    inside_eps: float = INSIDE_EPS,
    regions: Optional[Tensor] = None,
) -> AnchorAssignment:
    """Scale-constrained assignment of points (FCOS, and ATSS 'SSC' on anchor centres).

    A point (cx, cy (A,)) qualifies for a gt if it lies inside ``regions``
    (A, G, 4), by default the gt box itself, with every margin > ``inside_eps``,
    and lo_l <= max(l, t, r, b) <= hi_l (to the gt, both ends inclusive) for
    its level l. It takes the qualifying gt of smallest +1 area (ties: lowest index).
    """
    if len(num_per_level) != len(size_ranges):
        raise ValueError(f"size ranges are given for {len(size_ranges)} levels, got {len(num_per_level)} levels")
    lo, hi = per_level_columns(size_ranges, num_per_level, cx)  # (A,) each
    ltrb = ltrb_to_boxes(cx[:, None], cy[:, None], gt_boxes)  # (A, G, 4)
    margins = ltrb if regions is None else ltrb_to_boxes(cx[:, None], cy[:, None], regions)
    max_side = ltrb.max(dim=-1).values
    is_pos = (margins.min(dim=-1).values > inside_eps) & (max_side >= lo[:, None]) & (max_side <= hi[:, None])
    area = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1)
    return best_positive_gt(-area.expand_as(max_side), is_pos, gt_boxes, gt_labels)


@torch.no_grad()
def ssc_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    size_ranges: Sequence[Tuple[float, float]] = SSC_SIZE_RANGES,
) -> AnchorAssignment:
    """FCOS-style spatial and scale constraint on anchor centres (atss_heads §5.2).

    A centre is a candidate for a gt if it lies inside it and
    lo_l <= max(l, t, r, b) <= hi_l for its level; it takes the candidate gt
    of smallest (+1) area (ties: lowest index).
    """
    if len(num_per_level) != len(size_ranges):
        raise ValueError(f"POSITIVE_TYPE 'SSC' needs {len(size_ranges)} levels, got {len(num_per_level)}")
    if len(gt_boxes) == 0:
        return background(len(anchors), gt_boxes)
    acx, acy = box_centres(anchors)
    return smallest_gt_in_range(acx, acy, num_per_level, gt_boxes, gt_labels, size_ranges, INSIDE_EPS)


@torch.no_grad()
def max_iou_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
) -> AnchorAssignment:
    """RetinaNet matching (atss_heads §9.2): each anchor's best gt by +1 IoU;
    IoU < bg -> 0; bg <= IoU < fg -> -1; else that gt's label, plus the
    low-quality rescue of every gt's best anchors. G = 0 -> all background.
    """
    if len(gt_boxes) == 0:
        return background(len(anchors), gt_boxes)
    matches = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)(
        box_iou(gt_boxes, anchors, box_offset=1)
    )
    out = _from_gt_index(matches.clamp(min=0), matches >= 0, gt_boxes, gt_labels)
    ignore = matches == Matcher.BETWEEN_THRESHOLDS
    return out._replace(labels=torch.where(ignore, torch.full_like(out.labels, -1), out.labels))


@torch.no_grad()
def iou_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
) -> AnchorAssignment:
    """RetinaNet-style max-IoU matching, then centre-outside positives ignored (atss_heads §5.3).

    IoU < bg -> 0; bg <= IoU < fg -> -1; else the gt's label, with
    low-quality rescue. Positives whose centre is not inside their gt -> -1.
    """
    out = max_iou_assign(anchors, num_per_level, gt_boxes, gt_labels, fg_iou_thresh, bg_iou_thresh)
    acx, acy = box_centres(anchors)
    outside = (out.labels > 0) & ~centres_inside(acx, acy, out.matched_boxes)  # each anchor against its own gt
    return AnchorAssignment(
        torch.where(outside, torch.full_like(out.labels, -1), out.labels),
        torch.where(outside, torch.full_like(out.matched_idx, -1), out.matched_idx),
        torch.where(outside[:, None], torch.zeros_like(out.matched_boxes), out.matched_boxes),
    )


@torch.no_grad()
def topk_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    topk: int = 9,
) -> AnchorAssignment:
    """Per gt, the top-k anchors over all levels by IoU minus a tiny distance tie-break,
    kept if their centre is inside the gt (atss_heads §5.4). Several gts: highest IoU.
    """
    if len(gt_boxes) == 0:
        return background(len(anchors), gt_boxes)
    ious = box_iou(anchors, gt_boxes, box_offset=1)  # (A, G)
    dist = centre_distances(anchors, gt_boxes)
    # Scaled below 1/1000 so it only breaks IoU ties in favour of nearer anchors.
    dist = dist / dist.max().clamp(min=torch.finfo(dist.dtype).tiny) / 1000
    cand = (ious - dist).topk(min(topk, len(anchors)), dim=0).indices  # (K, G)
    acx, acy = box_centres(anchors)
    is_pos = torch.zeros_like(ious, dtype=torch.bool).scatter_(0, cand, centres_inside(acx[cand], acy[cand], gt_boxes))
    return best_positive_gt(ious, is_pos, gt_boxes, gt_labels)


POSITIVE_TYPES: Dict[str, Callable[..., AnchorAssignment]] = {
    "ATSS": atss_assign,
    "SSC": ssc_assign,
    "IoU": iou_assign,
    "TOPK": topk_assign,
}
