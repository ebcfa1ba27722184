"""DSLA smooth-label assignment: the hand-worked checks of dsla.md §8.1-8.4 and the
invariants of §8.7 (assignment side)."""
import itertools

import pytest
import torch
from torch.overrides import TorchFunctionMode

from atss_core.modeling.assigners import DSLA_REGRESS_RANGES, dsla_assign
from atss_core.modeling.assigners.dsla import relaxed_ranges, scale_scores, smooth_labels

STRIDES = (8, 16, 32, 64, 128)


def _cells(points):
    """[(x, y, level 0..4)], grouped by level -> cells (A, 4), num_per_level [5]."""
    points = sorted(points, key=lambda p: p[2])
    cells = [[x - STRIDES[l] / 2, y - STRIDES[l] / 2, x + STRIDES[l] / 2, y + STRIDES[l] / 2] for x, y, l in points]
    counts = [sum(1 for p in points if p[2] == l) for l in range(5)]
    return torch.tensor(cells, dtype=torch.float32).reshape(-1, 4), counts


def _smooth(points, gts, **kw):
    cells, counts = _cells(points)
    return smooth_labels(cells, counts, torch.tensor(gts, dtype=torch.float32).reshape(-1, 4), **kw)


def test_relaxed_ranges_truncate_like_the_original():
    assert relaxed_ranges(DSLA_REGRESS_RANGES, 0.2) == [(0, 76), (51, 153), (102, 307), (204, 614), (409, 120000000)]
    with pytest.raises(ValueError, match="INTERVAL_RELAXATION_FACTOR"):
        relaxed_ranges(DSLA_REGRESS_RANGES, 1.0)


SCALE_TABLE = {  # level -> [(m, w)], dsla §8.2
    0: [(0.5, 1), (64, 1), (70, 0.5), (76, 0), (80, 0)],
    1: [(40, 0), (51, 0), (57.5, 0.5), (64, 1), (128, 1), (140.5, 0.5), (153, 0), (160, 0)],
    2: [(115, 0.5), (281.5, 0.5)],
    3: [(230, 0.5), (563, 0.5)],
    4: [(460.5, 0.5), (512, 1), (1e7, 1)],
}


def _w(level, m, factor=0.2):
    lo, hi = DSLA_REGRESS_RANGES[level]
    glo, ghi = relaxed_ranges(DSLA_REGRESS_RANGES, factor)[level] if factor else (lo, hi)
    col = lambda v: torch.tensor([[float(v)]], dtype=torch.float64)  # noqa: E731
    return scale_scores(col(m), col(lo), col(hi), col(glo), col(ghi)).item()


@pytest.mark.parametrize("level", range(5))
def test_scale_score_table(level):
    for m, w in SCALE_TABLE[level]:
        assert _w(level, m) == pytest.approx(w, abs=1e-9), (level, m)


def test_scale_score_without_relaxation_is_an_indicator():
    assert _w(0, 70, factor=0) == 0
    assert _w(1, 64, factor=0) == 1
    assert _w(0, 64, factor=0) == 1
    assert _w(1, 128.5, factor=0) == 0


def test_scale_score_is_positive_on_at_most_two_adjacent_levels():
    ms = torch.linspace(0, 2000, 40001, dtype=torch.float64)
    positive = torch.stack([torch.tensor([_w(l, m) > 0 for m in ms[::20].tolist()]) for l in range(5)])
    counts = positive.sum(dim=0)
    assert counts.max() == 2 and counts.min() == 1
    for col in positive.T[counts == 2]:
        levels = col.nonzero().flatten().tolist()
        assert levels[1] - levels[0] == 1


GT_A = [0, 0, 100, 60]


def test_smooth_label_table_for_gt_a():
    points = [(32, 16, 0), (32, 16, 1), (48, 32, 0), (48, 32, 1), (96, 56, 0), (104, 16, 0)]
    # Sorted by level: P3 points first, in the order given.
    s = _smooth(points, [GT_A])[:, 0]
    p3 = dict(zip([(32, 16), (48, 32), (96, 56), (104, 16)], s[:4].tolist()))
    p4 = dict(zip([(32, 16), (48, 32)], s[4:].tolist()))
    assert p3[(32, 16)] == pytest.approx(0.275780, abs=1e-5)
    assert p4[(32, 16)] == pytest.approx(0.413670, abs=1e-5)
    assert p3[(48, 32)] == pytest.approx(1.0, abs=1e-6)
    assert p4[(48, 32)] == pytest.approx(0.076923, abs=1e-5)
    assert p3[(96, 56)] == 0
    assert p3[(104, 16)] == 0


def test_smooth_label_without_core_zone():
    s = _smooth([(48, 32, 0), (48, 32, 1)], [GT_A], core_zone=False)[:, 0]
    assert s.tolist() == pytest.approx([0.898717, 0.069132], abs=1e-5)


def test_smooth_label_with_center_sampling():
    s = _smooth([(32, 16, 0), (48, 32, 0), (32, 16, 1)], [GT_A], center_sampling_radius=1.5)[:, 0]
    assert s.tolist() == pytest.approx([0.0, 1.0, 0.413670], abs=1e-5)


def test_smooth_label_small_gt():
    s = _smooth([(8, 8, 0), (16, 16, 0), (16, 16, 1)], [[0, 0, 20, 20]])[:, 0]
    assert s.tolist() == pytest.approx([1.0, 0.25, 0.0], abs=1e-5)


def _assign(points, gts, labels, **kw):
    cells, counts = _cells(points)
    return dsla_assign(
        cells, counts, torch.tensor(gts, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64), **kw
    )


def test_highest_smooth_label_wins_not_the_smallest_box():
    big, small = [0, 0, 64, 64], [8, 8, 40, 40]
    s = _smooth([(32, 32, 0)], [big, small])[0]
    assert s.tolist() == pytest.approx([1.0, 1 / 3], abs=1e-5)
    out = _assign([(32, 32, 0)], [big, small], [1, 2])
    # FCOS's smallest-area rule would pick Small (label 2).
    assert out.labels.tolist() == [1] and out.matched_idx.tolist() == [0]
    assert out.smooth.tolist() == pytest.approx([1.0])
    assert out.matched_boxes.tolist() == [big]


def test_two_gts_of_different_classes():
    b = [24, 0, 64, 40]
    out = _assign([(32, 16, 0), (32, 16, 1)], [GT_A, b], [4, 6])  # mmdet classes 3 and 5
    assert out.smooth.tolist() == pytest.approx([0.408248, 0.413670], abs=1e-5)
    assert out.labels.tolist() == [6, 4]
    assert out.matched_boxes.tolist() == [b, GT_A]
    # P3 regression target (l, t, r, b) = (8, 16, 32, 24) from B.
    x, y = 32, 16
    assert [x - b[0], y - b[1], b[2] - x, b[3] - y] == [8, 16, 32, 24]


def _random_scene(seed, num_gts=6, size=300):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_gts, 2, generator=g) * size * 0.8
    wh = 4 + torch.rand(num_gts, 2, generator=g) * size * 0.6
    gts = torch.cat([xy, xy + wh], dim=1)
    labels = torch.randint(1, 5, (num_gts,), generator=g)
    points = [
        (x * s, y * s, l) for l, s in enumerate(STRIDES) for y in range(-(-size // s)) for x in range(-(-size // s))
    ]
    cells, counts = _cells(points)
    return cells, counts, gts, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_gt_order_does_not_change_targets(seed):
    cells, counts, gts, labels = _random_scene(seed)
    ref = dsla_assign(cells, counts, gts, labels)
    for perm in [torch.randperm(len(gts), generator=torch.Generator().manual_seed(seed + 10)), torch.arange(5, -1, -1)]:
        out = dsla_assign(cells, counts, gts[perm], labels[perm])
        assert torch.equal(out.labels, ref.labels)
        assert torch.equal(out.smooth, ref.smooth)
        assert torch.equal(out.matched_boxes, ref.matched_boxes)
        assert torch.equal(perm[out.matched_idx.clamp(min=0)][ref.matched_idx >= 0], ref.matched_idx[ref.matched_idx >= 0])


def test_duplicate_same_class_gts_take_the_max():
    points = [(32, 16, 0), (48, 32, 0), (32, 16, 1)]
    weak = [0, 0, 100, 60]
    strong = [24, 0, 64, 40]
    for gts in ([weak, strong], [strong, weak]):
        out = _assign(points, gts, [3, 3])
        best = _smooth(points, gts).max(dim=1).values
        assert torch.equal(out.smooth, best)
        assert out.labels.tolist() == [3, 3, 3]


def test_exact_ties_go_to_the_lowest_gt_index():
    out = _assign([(32, 16, 0)], [GT_A, GT_A], [2, 5])
    assert out.matched_idx.tolist() == [0] and out.labels.tolist() == [2]


def test_zero_gt_image():
    cells, counts, _, _ = _random_scene(0)
    out = dsla_assign(cells, counts, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert not out.smooth.any() and not out.labels.any() and not out.matched_boxes.any()
    assert (out.matched_idx == -1).all()


@pytest.mark.parametrize("seed,radius", itertools.product([2, 3], [0.0, 1.5]))
def test_invariants_on_random_scenes(seed, radius):
    cells, counts, gts, labels = _random_scene(seed, num_gts=8)
    out = dsla_assign(cells, counts, gts, labels, center_sampling_radius=radius)
    s = out.smooth
    assert ((s >= 0) & (s <= 1)).all()
    x, y = (cells[:, 0] + cells[:, 2]) / 2, (cells[:, 1] + cells[:, 3]) / 2
    stride = cells[:, 2] - cells[:, 0]
    inside_any = ((x[:, None] > gts[:, 0]) & (y[:, None] > gts[:, 1]) & (x[:, None] < gts[:, 2]) & (y[:, None] < gts[:, 3]))
    assert not s[~inside_any.any(dim=1)].any()
    # Background exactly where s = 0; labels are gt classes.
    assert torch.equal(out.labels > 0, s > 0)
    assert set(out.labels[s > 0].tolist()) <= set(labels.tolist())
    # s = 1 only in a core zone (or at a gt centre) with the scale measure inside [lo, hi].
    lo = torch.tensor([r[0] for r in DSLA_REGRESS_RANGES], dtype=torch.float32).repeat_interleave(torch.tensor(counts))
    hi = torch.tensor([r[1] for r in DSLA_REGRESS_RANGES], dtype=torch.float32).repeat_interleave(torch.tensor(counts))
    for i in (s == 1).nonzero().flatten().tolist():
        box = out.matched_boxes[i]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert abs(x[i] - cx) <= stride[i] / 2 and abs(y[i] - cy) <= stride[i] / 2
        m = torch.stack([x[i] - box[0], y[i] - box[1], box[2] - x[i], box[3] - y[i]]).max()
        assert lo[i] <= m <= hi[i]
    # With centre sampling, positives lie strictly inside their gt's centre region.
    if radius:
        box = out.matched_boxes[s > 0]
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        reach = radius * stride[s > 0]
        assert ((x[s > 0] - cx).abs() < reach).all() and ((y[s > 0] - cy).abs() < reach).all()


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_assignment_has_no_python_loop_over_gts():
    """A per-gt Python loop would make the number of torch calls grow with G."""
    cells, counts, gts, labels = _random_scene(4, num_gts=64)

    def num_calls(g):
        with _CountCalls() as mode:
            dsla_assign(cells, counts, gts[:g], labels[:g], center_sampling_radius=1.5)
        return mode.calls

    assert num_calls(64) == num_calls(2) == num_calls(1)
