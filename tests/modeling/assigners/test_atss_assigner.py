"""ATSS assignment and its POSITIVE_TYPE ablations: atss_heads §5, checks C5-C8, C16."""
import math
import statistics

import pytest
import torch

from atss_core.modeling.anchors import AnchorGenerator
from atss_core.modeling.assigners import POSITIVE_TYPES, atss_assign, iou_assign, ssc_assign, topk_assign
from atss_core.modeling.assigners.atss import (
    atss_candidates,
    atss_thresholds,
    best_positive_gt,
    centre_distances,
    centres_inside,
)
from atss_core.structures.boxlist_ops import box_iou


def _toy():
    """C5: two levels, 4x4 (stride 8, size 16) and 2x2 (stride 16, size 32), image 32x32."""
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    return gen([torch.empty(1, 0, 4, 4), torch.empty(1, 0, 2, 2)])


GT = torch.tensor([[4.0, 5.0, 22.0, 15.0]])


def test_c5_candidates_ious_and_threshold():
    anchors, per_level = _toy()
    dist = centre_distances(anchors, GT)[:, 0]
    assert dist[5].item() == pytest.approx(math.sqrt(5), abs=1e-4)
    assert dist[1].item() == pytest.approx(6.0828, abs=1e-4)
    cand = atss_candidates(centre_distances(anchors, GT), per_level, 2)
    assert sorted(cand[:, 0].tolist()) == [1, 5, 16, 17]
    ious = box_iou(anchors, GT)[:, 0]
    for a, v in {5: 176 / 289, 1: 120 / 345, 16: 209 / 1024, 17: 159.5 / 1073.5}.items():
        assert ious[a].item() == pytest.approx(v, abs=1e-6)
    thr = atss_thresholds(ious[cand])
    assert thr.item() == pytest.approx(0.533040, abs=1e-5)


def test_c5_assignment():
    anchors, per_level = _toy()
    out = atss_assign(anchors, per_level, GT, torch.tensor([7]), topk=2)
    expected = torch.zeros(20, dtype=torch.int64)
    expected[5] = 7
    assert torch.equal(out.labels, expected)
    assert out.matched_idx.tolist() == [0 if a == 5 else -1 for a in range(20)]
    assert out.matched_boxes[5].tolist() == GT[0].tolist()
    assert out.matched_boxes[torch.arange(20) != 5].abs().sum().item() == 0


def test_c6_threshold_uses_unbiased_std():
    thr = atss_thresholds(torch.tensor([[0.0], [0.0], [0.0], [0.6], [0.7]], dtype=torch.float64))
    assert thr.item() == pytest.approx(0.26 + 0.357771, abs=1e-6)
    assert 0.6 < thr.item() < 0.7  # a biased std (0.58) would admit 0.6
    thr = atss_thresholds(torch.tensor([[0.0], [0.3], [0.4], [0.5]], dtype=torch.float64))
    assert thr.item() == pytest.approx(0.516025, abs=1e-6)


def test_c7_centre_inside_eps():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)
    y = torch.tensor([[10.0]], dtype=torch.float64)
    assert not centres_inside(torch.tensor([[0.01]], dtype=torch.float64), y, gt).item()
    assert centres_inside(torch.tensor([[0.02]], dtype=torch.float64), y, gt).item()


@pytest.mark.parametrize("x, positive", [(0.01, False), (0.02, True)])
def test_c7_end_to_end(x, positive):
    # One high-IoU candidate (zero-width anchor centred at x) and four far ones:
    # thr = mean + std of [21/441, 0, 0, 0, 0] < 21/441, so only the inside test decides.
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)
    anchors = torch.tensor(
        [[x, 0, x, 20], [100, 100, 110, 110], [120, 100, 130, 110], [100, 120, 110, 130], [120, 120, 130, 130]],
        dtype=torch.float64,
    )
    out = atss_assign(anchors, [5], gt, torch.tensor([3]), topk=5)
    assert out.labels.tolist() == [3 if positive else 0, 0, 0, 0, 0]


def test_c8_several_gts_per_anchor():
    score = torch.tensor([[0.5, 0.6], [0.4, 0.1], [0.2, 0.3]])
    is_pos = torch.tensor([[True, True], [True, False], [False, False]])
    gts = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
    out = best_positive_gt(score, is_pos, gts, torch.tensor([3, 9]))
    assert out.labels.tolist() == [9, 3, 0]
    assert out.matched_idx.tolist() == [1, 0, -1]
    # Exact tie: the lowest gt index wins.
    out = best_positive_gt(torch.tensor([[0.5, 0.5]]), torch.tensor([[True, True]]), gts, torch.tensor([3, 9]))
    assert out.matched_idx.tolist() == [0]


@pytest.mark.parametrize("rule", sorted(POSITIVE_TYPES))
def test_c16_no_gt_is_all_background(rule):
    anchors, per_level = _toy()
    if rule == "SSC":  # SSC's size ranges are defined for exactly five levels
        anchors, per_level = anchors[:5], [1, 1, 1, 1, 1]
    out = POSITIVE_TYPES[rule](anchors, per_level, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert out.labels.dtype == torch.int64 and (out.labels == 0).all()
    assert (out.matched_idx == -1).all() and out.matched_boxes.shape == (len(anchors), 4)
    assert (out.matched_boxes == 0).all()


def test_ssc_scale_ranges_and_smallest_area():
    anchors = torch.tensor([[40.0, 40, 60, 60]] * 5)  # one anchor per level, centre (50, 50)
    gts = torch.tensor([[0.0, 0, 100, 100], [20, 20, 80, 80], [-40, -40, 140, 140]])
    # max(l,t,r,b) = 50, 30, 90: level 0 ([-1, 64]) admits gts 0 and 1 -> smaller area (1);
    # level 1 ([64, 128]) admits gt 2; levels 2-4 admit none.
    out = ssc_assign(anchors, [1, 1, 1, 1, 1], gts, torch.tensor([1, 2, 3]))
    assert out.labels.tolist() == [2, 3, 0, 0, 0]
    assert out.matched_idx.tolist() == [1, 2, -1, -1, -1]
    with pytest.raises(ValueError, match="5 levels"):
        ssc_assign(anchors[:2], [1, 1], gts, torch.tensor([1, 2, 3]))


def test_iou_rule_thresholds_and_centre_ignore():
    gt = torch.tensor([[0.0, 0, 9, 9]])  # +1 area 100
    anchors = torch.tensor([
        [0.0, 0, 9, 9],    # IoU 1 -> positive
        [0.0, 0, 9, 14],   # 100/150 -> positive, centre (4.5, 7) inside
        [0.0, 0, 9, 19],   # 100/200 = 0.5 -> positive by IoU, but centre y 9.5 is outside -> ignore
        [0.0, 0, 9, 22],   # 100/230 -> between thresholds -> ignore
        [0.0, 0, 9, 29],   # 100/300 -> background
    ])
    out = iou_assign(anchors, [5], gt, torch.tensor([5]), fg_iou_thresh=0.5, bg_iou_thresh=0.4)
    assert out.labels.tolist() == [5, 5, -1, -1, 0]
    assert out.matched_idx.tolist() == [0, 0, -1, -1, -1]


def test_topk_rule():
    gt = torch.tensor([[0.0, 0, 9, 9]])
    anchors = torch.tensor([
        [0.0, 0, 9, 9],      # IoU 1
        [0.0, 0, 9, 14],     # 0.6667
        [1.0, 1, 10, 10],    # 81/119 = 0.6807
        [50.0, 50, 60, 60],  # 0
    ])
    out = topk_assign(anchors, [4], gt, torch.tensor([2]), topk=2)
    assert out.labels.tolist() == [2, 0, 2, 0]


# ----------------------------------------------------------------------------
# Reference equivalence: a literal per-gt, per-level transcription of §5.1.


def _naive_atss(anchors, per_level, gts, labels, topk, a_per_loc):
    anchors, gts = anchors.tolist(), gts.tolist()

    def iou(a, g):
        iw = min(a[2], g[2]) - max(a[0], g[0]) + 1
        ih = min(a[3], g[3]) - max(a[1], g[1]) + 1
        inter = max(iw, 0) * max(ih, 0)
        area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
        return inter / (area(a) + area(g) - inter)

    def centre(b):
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    positives = []  # per gt: set of anchor indices
    for g in gts:
        gx, gy = centre(g)
        cands, start = [], 0
        for n in per_level:
            d = sorted(
                (math.hypot(centre(anchors[i])[0] - gx, centre(anchors[i])[1] - gy), i) for i in range(start, start + n)
            )
            k = min(topk * a_per_loc, n)
            # The scenes are drawn so that no two distances tie at the cut.
            assert k == n or d[k - 1][0] != d[k][0] or a_per_loc > 1
            cands += [i for _, i in d[:k]]
            start += n
        vals = [iou(anchors[i], g) for i in cands]
        thr = statistics.mean(vals) + statistics.stdev(vals)
        pos = set()
        for i, v in zip(cands, vals):
            cx, cy = centre(anchors[i])
            if v >= thr and min(cx - g[0], cy - g[1], g[2] - cx, g[3] - cy) > 0.01:
                pos.add(i)
        positives.append(pos)
    out_labels, out_idx = [], []
    for i in range(len(anchors)):
        best, best_g = None, -1
        for gi, g in enumerate(gts):
            if i in positives[gi] and (best is None or iou(anchors[i], g) > best):
                best, best_g = iou(anchors[i], g), gi
        out_idx.append(best_g)
        out_labels.append(labels[best_g] if best_g >= 0 else 0)
    return out_labels, out_idx


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_matches_naive_reference(seed):
    g = torch.Generator().manual_seed(seed)
    ratios = (1.0,) if seed % 4 else (0.5, 2.0)
    gen = AnchorGenerator(sizes=(16, 32, 64), aspect_ratios=ratios, strides=(4, 8, 16))
    anchors, per_level = gen([torch.empty(1, 0, 16, 16), torch.empty(1, 0, 8, 8), torch.empty(1, 0, 4, 4)])
    anchors = anchors.double()
    num_gt = 1 + seed % 5
    xy = torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * 50
    wh = 4 + torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * 40
    gts = torch.cat([xy, xy + wh], dim=1)
    labels = torch.randint(1, 81, (num_gt,), generator=g)
    topk = 3 + seed % 7
    out = atss_assign(anchors, per_level, gts, labels, topk=topk, num_anchors_per_loc=len(ratios))
    ref_labels, ref_idx = _naive_atss(anchors, per_level, gts, labels.tolist(), topk, len(ratios))
    assert out.labels.tolist() == ref_labels
    assert out.matched_idx.tolist() == ref_idx
    assert sum(1 for v in ref_labels if v > 0) > 0  # the scene is not trivially empty
