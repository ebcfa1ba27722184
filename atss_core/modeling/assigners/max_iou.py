"""Max-IoU matching with two thresholds (maskrcnn-benchmark ``Matcher``, atss_heads §9.2).

Used by RetinaNet and by ATSS ``POSITIVE_TYPE = 'IoU'``.
"""
import torch
from torch import Tensor


class Matcher:
    """Match each anchor to its best gt by a quality (IoU) matrix.

    For an anchor with best quality q over the gts:
        q >= high          -> that gt index,
        low <= q < high    -> BETWEEN_THRESHOLDS (-2),
        q < low            -> BELOW_LOW_THRESHOLD (-1).
    With ``allow_low_quality_matches``, every anchor whose quality equals
    some gt's maximum (ties included) gets back its own best-gt index even
    below ``low``. Unlike the original, an empty gt set is not an error: all
    anchors are BELOW_LOW_THRESHOLD (background).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} must not exceed high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    @torch.no_grad()
    def __call__(self, quality: Tensor) -> Tensor:
        """quality (G, A) -> matches (A,) int64 in [-2, G)."""
        num_gt, num_anchors = quality.shape
        if num_gt == 0:
            return torch.full((num_anchors,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=quality.device)
        best, matches = quality.max(dim=0)
        best_gt = matches.clone()
        matches[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best >= self.low_threshold) & (best < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            per_gt_best = quality.max(dim=1, keepdim=True).values  # (G, 1)
            rescued = (quality == per_gt_best).any(dim=0)  # (A,)
            matches = torch.where(rescued, best_gt, matches)  # no boolean indexing: no host sync
        return matches
