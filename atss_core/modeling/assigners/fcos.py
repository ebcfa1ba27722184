"""FCOS assignment: points inside a gt (or its centre region) whose size suits the level
(atss_heads §9.1; sfzhang15/ATSS ``modeling/rpn/fcos/loss.py``)."""
from typing import Sequence, Tuple

import torch
from torch import Tensor

from .atss import AnchorAssignment, background, box_centres, smallest_gt_in_range

# Per-level ranges of max(l, t, r, b), both ends inclusive, for P3..P7.
FCOS_SIZE_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))


def centre_regions(gt_boxes: Tensor, strides: Tensor, radius: float) -> Tensor:
    """Centre-sampling regions: gt centre +- radius * stride, clipped to the gt.

    gt_boxes (G, 4), strides (A,) of the points -> (A, G, 4).
    """
    gcx, gcy = box_centres(gt_boxes)
    reach = (radius * strides)[:, None]  # (A, 1)
    return torch.stack(
        (
            torch.maximum(gcx - reach, gt_boxes[:, 0]),
            torch.maximum(gcy - reach, gt_boxes[:, 1]),
            torch.minimum(gcx + reach, gt_boxes[:, 2]),
            torch.minimum(gcy + reach, gt_boxes[:, 3]),
        ),
        dim=-1,
    )


@torch.no_grad()
def fcos_assign(
    cells: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    size_ranges: Sequence[Tuple[float, float]] = FCOS_SIZE_RANGES,
    center_sampling_radius: float = 0.0,
) -> AnchorAssignment:
    """
    A location qualifies for a gt if max(l, t, r, b) to it lies in its level's
    range and it is strictly inside the gt, or, with center_sampling_radius > 0,
    strictly inside the gt's centre region; it takes the qualifying gt of
    smallest +1 area. G = 0 gives all background; the original's stand-in
    for that test (no positive at all when the first gt is centred on x = 0)
    is not reproduced.

    Args:
        cells (A, 4): ``PointGenerator`` cells (centre = location, x2 - x1 = stride).
        num_per_level [L] (L = len(size_ranges)); gt_boxes (G, 4) xyxy; gt_labels (G,).
    """
    if len(gt_boxes) == 0:
        return background(len(cells), gt_boxes)
    cx, cy = box_centres(cells)
    regions = None
    if center_sampling_radius > 0:
        regions = centre_regions(gt_boxes, cells[:, 2] - cells[:, 0], center_sampling_radius)
    return smallest_gt_in_range(cx, cy, num_per_level, gt_boxes, gt_labels, size_ranges, 0.0, regions)
