"""DW assignment side: the hand-worked checks of dw.md §11.1-11.5 and §11.8, the invariants
of §11.12, and agreement with a float64 per-gt loop written straight from §3-5."""
import math

import pytest
import torch

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners.dw import (
    center_prior,
    dw_assign,
    negative_bag_weights,
    negative_probability,
    points_inside,
    positive_weights,
)
from atss_core.structures.boxlist_ops import iou_and_giou

F64 = torch.float64


def _t(values):
    return torch.tensor(values, dtype=F64)


# ----------------------------------------------------------------------------- §11.1 points and inside test
def test_points_are_offset_by_half_a_stride_row_major():
    cells, counts = PointGenerator((8,), offset=0.5)([torch.zeros(1, 1, 2, 3)])
    points = (cells[:, :2] + cells[:, 2:]) / 2
    assert counts == [6]
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_inside_is_strict():
    inside = points_inside(_t([[32, 16], [31.9, 16], [0, 16], [16, 16]]), _t([[0, 0, 32, 32]]))
    assert inside[:, 0].tolist() == [False, True, False, True]


# ----------------------------------------------------------------------------- §11.2 centre prior
PRIOR_TABLE = [  # stride, point, pi for gt (0, 0, 32, 32)
    (8, (16, 16), 1.0),
    (8, (12, 12), 0.816355),
    (8, (20, 12), 0.816355),
    (8, (4, 4), 0.161032),
    (8, (28, 28), 0.161032),
    (8, (36, 4), 0.0),
    (16, (8, 8), 0.816355),
]


def _prior(soft=True):
    points = _t([p for _, p, _ in PRIOR_TABLE])
    strides = _t([s for s, _, _ in PRIOR_TABLE])
    gt = _t([[0, 0, 32, 32]])
    return center_prior(points, strides, gt, points_inside(points, gt), 0.0, 1.11, soft, 0.3)[:, 0]


def test_center_prior_table():
    expected = [pi for _, _, pi in PRIOR_TABLE]
    assert _prior().tolist() == pytest.approx(expected, abs=1e-6)
    # independent: 0.5 cell off centre on both axes
    assert math.exp(-2 * 0.5**2 / (2 * 1.11**2)) == pytest.approx(0.816355, abs=1e-6)


def test_hard_prior_thresholds_at_0_3():
    hard = _prior(soft=False)
    assert hard[1].item() == 1 and hard[3].item() == 0 and hard[0].item() == 1 and hard[5].item() == 0


def test_prior_mean_shifts_the_peak_in_stride_units():
    points, strides, gt = _t([[24, 24]]), _t([8.0]), _t([[0, 0, 32, 32]])
    assert center_prior(points, strides, gt, torch.ones(1, 1, dtype=torch.bool), mean=1.0).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- §11.3 GIoU and p_loc
@pytest.mark.parametrize(
    "pred,gt,iou,giou,p_loc",
    [
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3, 1 / 3, 0.035674),
        ((0, 0, 10, 10), (20, 0, 30, 10), 0.0, -1 / 3, 0.0012726),
        ((2, 2, 6, 6), (0, 0, 8, 8), 0.25, 0.25, 0.023518),
    ],
)
def test_giou_and_regression_score(pred, gt, iou, giou, p_loc):
    u, g = iou_and_giou(_t([pred]), _t([gt]))
    assert u.item() == pytest.approx(iou, abs=1e-9) and g.item() == pytest.approx(giou, abs=1e-9)
    assert math.exp(-5 * (1 - g.item())) == pytest.approx(p_loc, rel=1e-4)


def test_giou_of_zero_area_boxes_is_finite():
    u, g = iou_and_giou(_t([[3, 3, 3, 3], [0, 0, 0, 0]]), _t([[3, 3, 3, 3], [1, 1, 2, 2]]))
    assert torch.isfinite(u).all() and torch.isfinite(g).all()
    assert u.tolist() == [0, 0]


def test_pairwise_broadcast_equals_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 2, generator=g, dtype=F64) * 20
    boxes = torch.cat([a, a + 1 + torch.rand(5, 2, generator=g, dtype=F64) * 20], 1)
    gts = boxes[:3] + 2
    iou, giou = iou_and_giou(boxes[:, None], gts[None])
    for i in range(5):
        for j in range(3):
            u, v = iou_and_giou(boxes[i], gts[j])
            assert (iou[i, j].item(), giou[i, j].item()) == pytest.approx((u.item(), v.item()), abs=1e-12)


# ----------------------------------------------------------------------------- §11.4 negative probability of one bag
@pytest.mark.parametrize(
    "ious,expected",
    [
        ([0.9, 0.7, 0.5, 0.3], [1.34e-12, 4 / 7, 1, 1]),
        ([0.9, 0.8, 0.6], [1.67e-12, 0.17 / 0.45, 1]),
        ([1.0, 0.75, 0.2], [1e-12, 0.583333, 1]),
        ([0.4, 0.3, 0.1], [1, 1, 1]),
        ([0.8], [1]),
        ([0.7, 0.7], [1, 1]),
    ],
)
def test_bag_negative_weights(ious, expected):
    m = negative_bag_weights(_t(ious)[:, None], torch.ones(len(ious), 1, dtype=torch.bool), 0.5, 2.0, 1e-12)[:, 0]
    for value, want in zip(m.tolist(), expected):
        assert value == pytest.approx(want, rel=3e-3 if want < 1e-6 else 1e-5)


def test_bag_excludes_points_outside_the_gt():
    # the 0.95 point is not inside: it neither sets f_lo nor gets a weight
    ious, inside = _t([[0.95], [0.9], [0.7], [0.5]]), torch.tensor([[False], [True], [True], [True]])
    m = negative_bag_weights(ious, inside)[:, 0]
    assert m[0].item() == 1 and m[1].item() < 1e-11 and m[2].item() == pytest.approx(0.32 / 0.56)


# ----------------------------------------------------------------------------- §11.5 positive weight
def test_positive_weights_one_gt_three_points():
    p_cls, loss, prior = _t([0.6, 0.4, 0.2]), _t([0.1, 0.2, 0.5]), _t([1.0, 0.8, 0.5])
    p_loc = torch.exp(-5 * loss)
    t = p_cls * p_loc
    assert p_loc.tolist() == pytest.approx([0.606531, 0.367879, 0.082085], abs=1e-6)
    assert t.tolist() == pytest.approx([0.363918, 0.147152, 0.016417], abs=1e-6)
    w = positive_weights(t[:, None], prior[:, None])[:, 0]
    assert w.tolist() == pytest.approx([1.759552, 0.192553, 0.006983], abs=1e-6)
    assert w.sum().item() == pytest.approx(1.959089, abs=1e-6)


def test_positive_weights_of_an_empty_bag_are_zero():
    w = positive_weights(torch.rand(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64))
    assert torch.equal(w, torch.zeros(4, 2, dtype=F64))


# ----------------------------------------------------------------------------- §11.8 collision rule
def test_same_class_overlap_takes_the_highest_gt_index():
    inside = torch.ones(1, 2, dtype=torch.bool)
    same = negative_probability(_t([[0.2, 0.7]]), inside, torch.tensor([3, 3]), 6)
    assert same[0].tolist() == pytest.approx([1, 1, 0.7, 1, 1, 1])
    reversed_values = negative_probability(_t([[0.7, 0.2]]), inside, torch.tensor([3, 3]), 6)
    assert reversed_values[0, 2].item() == pytest.approx(0.2)  # index, not the larger value
    other = negative_probability(_t([[0.2, 0.7]]), inside, torch.tensor([3, 5]), 6)
    assert other[0].tolist() == pytest.approx([1, 1, 0.2, 1, 0.7, 1])


def test_a_gt_that_does_not_contain_the_point_does_not_write():
    inside = torch.tensor([[True, False]])
    p = negative_probability(_t([[0.2, 0.7]]), inside, torch.tensor([3, 3]), 4)
    assert p[0].tolist() == pytest.approx([1, 1, 0.2, 1])


# ----------------------------------------------------------------------------- full rule vs a per-gt loop
def _scene(seed, num_gts=6, classes=3):
    """Points of a 64 x 96 image on 3 levels, gts (some of one class overlapping, one too small
    to contain a point), predicted boxes jittered around gts, random joint scores."""
    g = torch.Generator().manual_seed(seed)
    cells, counts = PointGenerator((8, 16, 32), offset=0.5)(
        [torch.zeros(1, 1, 8, 12), torch.zeros(1, 1, 4, 6), torch.zeros(1, 1, 2, 3)]
    )
    cells = cells.to(F64)
    xy = torch.rand(num_gts, 2, generator=g, dtype=F64) * torch.tensor([60.0, 30.0], dtype=F64)
    wh = 8 + torch.rand(num_gts, 2, generator=g, dtype=F64) * 40
    gts = torch.cat([xy, xy + wh], 1)
    gts[-1] = torch.tensor([41.0, 41.0, 43.0, 43.0], dtype=F64)  # contains no point
    gts[1] = gts[0] + 3  # same class, overlapping gt 0
    labels = torch.randint(1, classes + 1, (num_gts,), generator=g)
    labels[1] = labels[0]
    pick = torch.randint(0, num_gts, (len(cells),), generator=g)
    pred = gts[pick] + torch.randn(len(cells), 4, generator=g, dtype=F64) * 3
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2])
    scores = torch.rand(len(cells), classes, generator=g, dtype=F64)
    return cells, counts, gts, labels, pred, scores


def _loop_reference(cells, gts, labels, pred, scores, classes):
    """dw.md §3-5 one gt at a time, with sequential scatter writes."""
    px, py = (cells[:, 0] + cells[:, 2]) / 2, (cells[:, 1] + cells[:, 3]) / 2
    s = cells[:, 2] - cells[:, 0]
    weights = torch.zeros(len(cells), len(gts), dtype=F64)
    neg = torch.ones(len(cells), classes, dtype=F64)
    for j, (x1, y1, x2, y2) in enumerate(gts.tolist()):
        inside = torch.minimum(torch.minimum(px - x1, py - y1), torch.minimum(x2 - px, y2 - py)) > 0
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        prior = torch.exp(-((px - cx) / s) ** 2 / (2 * 1.11**2)) * torch.exp(-((py - cy) / s) ** 2 / (2 * 1.11**2))
        prior = prior * inside
        iw = (torch.minimum(pred[:, 2], gts[j, 2]) - torch.maximum(pred[:, 0], gts[j, 0])).clamp(min=0)
        ih = (torch.minimum(pred[:, 3], gts[j, 3]) - torch.maximum(pred[:, 1], gts[j, 1])).clamp(min=0)
        inter = iw * ih
        area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
        union = torch.clamp(area + (x2 - x1) * (y2 - y1) - inter, min=1e-6)
        ew = torch.maximum(pred[:, 2], gts[j, 2]) - torch.minimum(pred[:, 0], gts[j, 0])
        eh = torch.maximum(pred[:, 3], gts[j, 3]) - torch.minimum(pred[:, 1], gts[j, 1])
        enclose = torch.clamp(ew * eh, min=1e-6)
        iou = inter / union
        giou = iou - (enclose - union) / enclose
        t = scores[:, labels[j] - 1] * torch.exp(-5 * (1 - giou))
        weights[:, j] = torch.exp(5 * t) * t * prior / max(1e-12, (torch.exp(3 * t) * t * prior).sum().item())
        if not inside.any():
            continue
        iou = iou * inside
        f = (4 / 3) * (1 - iou**2)
        f_lo, f_hi = f[inside].min(), min(1.0, f[inside].max().item())
        m = torch.where(iou < 0.5, torch.ones_like(f), (f - f_lo + 1e-12) / (f_hi - f_lo + 1e-12))
        for n in inside.nonzero()[:, 0].tolist():
            neg[n, labels[j] - 1] = m[n]
    return weights, neg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_rule_equals_the_per_gt_loop(seed):
    cells, counts, gts, labels, pred, scores = _scene(seed)
    a = dw_assign(cells, counts, gts, labels, pred, scores)
    weights, neg = _loop_reference(cells, gts, labels, pred, scores, 3)
    dense = torch.zeros_like(weights).index_put_((a.pos_points, a.pos_gts), a.pos_weights)
    torch.testing.assert_close(dense, weights, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(a.neg_prob, neg, rtol=1e-9, atol=1e-20)
    assert not (a.pos_gts == len(gts) - 1).any()  # the pointless gt has an empty bag


# ----------------------------------------------------------------------------- §11.12 invariants
@pytest.mark.parametrize("seed", range(4))
def test_invariants_on_random_scenes(seed):
    cells, counts, gts, labels, pred, scores = _scene(seed + 10, num_gts=8)
    a = dw_assign(cells, counts, gts, labels, pred.clone().requires_grad_(), scores.clone().requires_grad_())
    points = (cells[:, :2] + cells[:, 2:]) / 2
    inside = points_inside(points, gts)
    iou = iou_and_giou(pred[:, None], gts[None])[0] * inside
    p = a.neg_prob
    assert (p > 0).all() and (p <= 1).all()
    assert not any(t.requires_grad for t in a)
    for c in range(3):
        of_class = inside & (labels == c + 1)
        assert (p[~of_class.any(1), c] == 1).all()
        all_low = ~(of_class & (iou >= 0.5)).any(1)
        assert (p[all_low, c] == 1).all()
    m = negative_bag_weights(iou, inside)
    for j in range(len(gts)):
        bag = inside[:, j].nonzero()[:, 0]
        if len(bag) >= 2 and iou[bag, j].max() >= 0.5 and len(set(iou[bag, j].tolist())) == len(bag):
            best = bag[iou[bag, j].argmax()]
            assert m[best, j] < 1e-6 and m[bag, j].min() == m[best, j] and m[bag, j].max() == 1
    assert (a.pos_weights >= 0).all()
    assert inside[a.pos_points, a.pos_gts].all() and len(a.pos_points) == inside.sum()
    t = scores[:, labels - 1] * torch.exp(-5 * (1 - iou_and_giou(pred[:, None], gts[None])[1]))
    for j in range(len(gts)):
        sel = a.pos_gts == j
        support = sel.clone()
        support[sel] = a.pos_weights[sel] > 0
        if not support.any():
            assert a.pos_weights[sel].sum() == 0
            continue
        tj = t[a.pos_points[support], j]
        total = a.pos_weights[sel].sum().item()
        assert math.exp(2 * tj.min().item()) - 1e-12 <= total <= math.exp(2 * tj.max().item()) + 1e-12


def test_zero_gts():
    cells, counts, _, _, pred, scores = _scene(0)
    a = dw_assign(cells, counts, torch.zeros(0, 4, dtype=F64), torch.zeros(0, dtype=torch.int64), pred, scores)
    assert a.pos_points.numel() == a.pos_gts.numel() == a.pos_weights.numel() == 0
    assert torch.equal(a.neg_prob, torch.ones_like(scores))


def test_scores_of_exactly_zero_and_one_and_degenerate_boxes_stay_finite():
    cells, counts, gts, labels, pred, scores = _scene(3)
    scores[::2] = 0.0
    scores[1::2] = 1.0
    pred[::3] = pred[::3, :2].repeat(1, 2)  # zero-area predictions
    a = dw_assign(cells, counts, gts, labels, pred, scores)
    assert torch.isfinite(a.pos_weights).all() and torch.isfinite(a.neg_prob).all()
