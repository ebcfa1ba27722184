"""ATSS label assignment and its three POSITIVE_TYPE ablations (atss_heads §5).

Pure functions of anchors and gts. Glossary: A anchors of one image (levels
concatenated), L levels, G gts, K candidates per gt. Every IoU here uses the
+1 pixel convention of sfzhang15/ATSS (head-internal, independent of
MODEL.BOX_OFFSET), and every "centre inside gt" test is min(l, t, r, b) > 0.01.
"""
from typing import Callable, Dict, NamedTuple, Sequence, Tuple

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
    """Distances from points to gt sides: cx, cy (..., G) with gt_boxes (G, 4) -> (..., G, 4)."""
    return torch.stack(
        (cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy), dim=-1
    )


def centres_inside(cx: Tensor, cy: Tensor, gt_boxes: Tensor) -> Tensor:
    """Whether points (..., G) lie inside the gt of their column: min(l, t, r, b) > 0.01."""
    return ltrb_to_boxes(cx, cy, gt_boxes).min(dim=-1).values > INSIDE_EPS


def atss_thresholds(cand_ious: Tensor) -> Tensor:
    """Per-gt IoU threshold: mean + unbiased std over the candidates, (K, G) -> (G,)."""
    return cand_ious.mean(dim=0) + cand_ious.std(dim=0)


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
    cand = atss_candidates(centre_distances(anchors, gt_boxes), num_per_level, topk * num_anchors_per_loc)
    cand_ious = ious.gather(0, cand)  # (K, G)
    acx, acy = box_centres(anchors)
    cand_pos = (cand_ious >= atss_thresholds(cand_ious)[None]) & centres_inside(acx[cand], acy[cand], gt_boxes)
    # Within one gt column the candidates are distinct anchors, so scatter is exact.
    is_pos = torch.zeros_like(ious, dtype=torch.bool).scatter_(0, cand, cand_pos)
    return best_positive_gt(ious, is_pos, gt_boxes, gt_labels)


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
    counts = torch.as_tensor(list(num_per_level), device=anchors.device)
    ranges = torch.as_tensor(size_ranges, dtype=anchors.dtype, device=anchors.device)
    lo, hi = ranges.repeat_interleave(counts, dim=0).unbind(-1)  # (A,)
    acx, acy = box_centres(anchors)
    ltrb = ltrb_to_boxes(acx[:, None], acy[:, None], gt_boxes)  # (A, G, 4)
    max_side = ltrb.max(dim=-1).values
    is_pos = (ltrb.min(dim=-1).values > INSIDE_EPS) & (max_side >= lo[:, None]) & (max_side <= hi[:, None])
    area = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1)
    return best_positive_gt(-area.expand_as(max_side), is_pos, gt_boxes, gt_labels)


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
    if len(gt_boxes) == 0:
        return background(len(anchors), gt_boxes)
    matches = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)(
        box_iou(gt_boxes, anchors, box_offset=1)
    )
    gt_idx = matches.clamp(min=0)
    acx, acy = box_centres(anchors)
    inside = centres_inside(acx, acy, gt_boxes[gt_idx])  # each anchor against its own gt
    matched = matches >= 0
    out = _from_gt_index(gt_idx, matched & inside, gt_boxes, gt_labels)
    ignore = (matches == Matcher.BETWEEN_THRESHOLDS) | (matched & ~inside)
    return out._replace(labels=torch.where(ignore, torch.full_like(out.labels, -1), out.labels))


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
