"""DSLA assignment: smooth labels = centerness-like value x scale score (dsla.md §2;
YonghaoHe/DSLA ``DSLAHead._get_target_single``).

Glossary: A points of one image (levels concatenated), L levels, G gts. Every
point is scored against every gt at once, (A, G), with its own level's stride
and ranges; no top-k, no competition between levels. Continuous geometry
(no +1). The original realises "highest smooth label wins" by sorting and
last-write-wins scatters; here it is an explicit max over gts (ties: lowest
gt index), so gt order cannot change the targets.
"""
from typing import List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from .atss import background, best_positive_gt, box_centres, ltrb_to_boxes, per_level_columns
from .fcos import centre_regions

# Per-level ranges of max(l, t, r, b) for P3..P7, both ends inclusive.
DSLA_REGRESS_RANGES = ((0, 64), (64, 128), (128, 256), (256, 512), (512, 100000000))
# Ramp denominators and centerness denominators are floored like the original's.
_MIN_DENOMINATOR = 0.01


class SmoothAssignment(NamedTuple):
    """Per-point targets of one image.

    labels (A,) int64: class 1..C of the chosen gt where ``smooth`` > 0, else 0.
    matched_idx (A,) int64: the chosen gt where ``smooth`` > 0, else -1.
    matched_boxes (A, 4): the chosen gt box where ``smooth`` > 0, else zeros.
    smooth (A,): s = max over gts of the smooth label, in [0, 1].
    """

    labels: Tensor
    matched_idx: Tensor
    matched_boxes: Tensor
    smooth: Tensor


def relaxed_ranges(ranges: Sequence[Tuple[float, float]], factor: float) -> List[Tuple[int, int]]:
    """Gray ranges (int(lo (1 - f)), int(hi (1 + f))): truncated to integers as the original.

    f = 0.2 on the default ranges -> (0, 76), (51, 153), (102, 307), (204, 614), (409, 120000000).
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"MODEL.DSLA.INTERVAL_RELAXATION_FACTOR must be in [0, 1), got {factor}")
    return [(int(lo * (1 - factor)), int(hi * (1 + factor))) for lo, hi in ranges]


def scale_scores(m: Tensor, lo: Tensor, hi: Tensor, glo: Tensor, ghi: Tensor) -> Tensor:
    """Scale score w of the scale measure m (A, G) against per-point ranges (A, 1):

    1 on [lo, hi]; linear ramps to 0 on [glo, lo) and (hi, ghi]; 0 elsewhere.
    With glo = lo and ghi = hi (no relaxation) w is the indicator of [lo, hi].
    """
    rise = (m - glo) / (lo - glo).clamp(min=_MIN_DENOMINATOR)
    fall = (ghi - m) / (ghi - hi).clamp(min=_MIN_DENOMINATOR)
    ones = torch.ones_like(m)
    w = torch.where(m < lo, rise, torch.where(m > hi, fall, ones))
    return torch.where((m >= glo) & (m <= ghi), w, torch.zeros_like(m))


def centerness(ltrb: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of (..., 4) distances -> (...),
    numerators >= 0 and denominators >= 0.01 (so a zero distance gives 0)."""
    l, t, r, b = ltrb.unbind(-1)
    lr = l.minimum(r).clamp(min=0) / l.maximum(r).clamp(min=_MIN_DENOMINATOR)
    tb = t.minimum(b).clamp(min=0) / t.maximum(b).clamp(min=_MIN_DENOMINATOR)
    return torch.sqrt(lr * tb)


def _per_point(values: Sequence[Tuple[float, float]], num_per_level: Sequence[int], like: Tensor):
    """Per-level pairs [L] -> two (A, 1) columns, each point carrying its level's pair."""
    return tuple(col[:, None] for col in per_level_columns(values, num_per_level, like))


def smooth_labels(
    cells: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    regress_ranges: Sequence[Tuple[float, float]] = DSLA_REGRESS_RANGES,
    relaxation_factor: float = 0.2,
    core_zone: bool = True,
    center_sampling_radius: float = 0.0,
) -> Tensor:
    """Smooth label S(p, g) = ctr(p, g) * w(p, g) of every point and gt (dsla §2.2) -> (A, G).

    Args:
        cells (A, 4): ``PointGenerator`` cells (centre = the point, x2 - x1 = its stride).
        num_per_level [L]; gt_boxes (G, 4) xyxy.
        regress_ranges: [L] (lo, hi) of the scale measure m = max(l, t, r, b).
        relaxation_factor: f of the gray ranges; 0 = hard ranges.
        core_zone: ctr = 1 where |x - cx| <= s/2 and |y - cy| <= s/2 (inside points).
        center_sampling_radius: > 0: "inside" means strictly inside the gt
            centre +- radius * stride clipped to the gt; 0: strictly inside the gt.
    """
    if len(num_per_level) != len(regress_ranges):
        raise ValueError(
            f"MODEL.DSLA.REGRESS_RANGES gives {len(regress_ranges)} levels, the head has {len(num_per_level)}"
        )
    x, y = box_centres(cells)
    strides = cells[:, 2] - cells[:, 0]
    ltrb = ltrb_to_boxes(x[:, None], y[:, None], gt_boxes)  # (A, G, 4)
    if center_sampling_radius > 0:
        regions = centre_regions(gt_boxes, strides, center_sampling_radius)
        inside = ltrb_to_boxes(x[:, None], y[:, None], regions).min(dim=-1).values > 0
    else:
        inside = ltrb.min(dim=-1).values > 0
    ctr = torch.where(inside, centerness(ltrb), torch.zeros_like(inside, dtype=ltrb.dtype))
    if core_zone:
        gcx, gcy = box_centres(gt_boxes)
        half = strides[:, None] / 2
        core = inside & ((x[:, None] - gcx).abs() <= half) & ((y[:, None] - gcy).abs() <= half)
        ctr = torch.where(core, torch.ones_like(ctr), ctr)
    lo, hi = _per_point(regress_ranges, num_per_level, ltrb)
    gray = relaxed_ranges(regress_ranges, relaxation_factor) if relaxation_factor else regress_ranges
    glo, ghi = _per_point(gray, num_per_level, ltrb)
    return ctr * scale_scores(ltrb.max(dim=-1).values, lo, hi, glo, ghi)


@torch.no_grad()
def dsla_assign(
    cells: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    regress_ranges: Sequence[Tuple[float, float]] = DSLA_REGRESS_RANGES,
    relaxation_factor: float = 0.2,
    core_zone: bool = True,
    center_sampling_radius: float = 0.0,
) -> SmoothAssignment:
    """Each point takes the gt of highest smooth label (not FCOS's smallest area).

    s(p) = max_g S(p, g); class and box come from that gt (ties: lowest
    index); the point is a positive iff s(p) > 0. Other gts that also cover
    the point, of whatever class, get no target (dsla §2.3). G = 0 -> all 0.

    Args: as :func:`smooth_labels`, plus gt_labels (G,) in 1..C.
    """
    if len(gt_boxes) == 0:
        return SmoothAssignment(*background(len(cells), gt_boxes), cells.new_zeros(len(cells)))
    scores = smooth_labels(
        cells, num_per_level, gt_boxes, regress_ranges, relaxation_factor, core_zone, center_sampling_radius
    )
    chosen = best_positive_gt(scores, scores > 0, gt_boxes, gt_labels)
    return SmoothAssignment(*chosen, scores.max(dim=1).values)
