"""Max-IoU matcher: atss_heads §9.2 and check C18."""
import torch

from atss_core.modeling.assigners import Matcher


def test_c18_thresholds_and_low_quality_rescue():
    quality = torch.tensor([[0.55, 0.45, 0.30, 0.10], [0.20, 0.35, 0.38, 0.05]])
    assert Matcher(0.5, 0.4, True)(quality).tolist() == [0, -2, 1, -1]
    # Without the rescue a2 (best 0.38 < 0.4) stays background.
    assert Matcher(0.5, 0.4, False)(quality).tolist() == [0, -2, -1, -1]


def test_rescue_includes_ties_and_uses_the_anchors_own_best_gt():
    # g1's maximum 0.3 is reached by a0 and a2; a0's own best gt is g0 (0.35 > 0.3).
    quality = torch.tensor([[0.35, 0.1, 0.2], [0.3, 0.1, 0.3]])
    assert Matcher(0.5, 0.4, True)(quality).tolist() == [0, -1, 1]


def test_no_gt_is_all_background():
    out = Matcher(0.5, 0.4, True)(torch.zeros(0, 6))
    assert out.tolist() == [-1] * 6 and out.dtype == torch.int64
