"""O2F one-to-few assignment and its T schedule: the hand-worked checks C3-C6 of o2f.md §11,
the assignment invariants of C10, and agreement with a plain per-gt reference of §4."""
import pytest
import torch

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners.o2f import (
    candidate_region,
    o2f_assign,
    o2f_assign_points,
    pairwise_iou,
    poto_quality,
    soft_label_scale,
)

STRIDES = (8, 16, 32, 64, 128)


def _col(values):
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------------------------- C3: candidate region
def _region_counts(gt, size=1024):
    cells, counts = PointGenerator(STRIDES, offset=0.5)([torch.zeros(1, 1, size // s, size // s) for s in STRIDES])
    inside = candidate_region(cells, torch.tensor([gt], dtype=torch.float32), radius=1.5)[:, 0]
    return [int(part.sum()) for part in inside.split(counts)], cells[inside]


@pytest.mark.parametrize(
    "gt, expected",
    [([0, 0, 100, 100], [9, 9, 9, 4, 1]), ([200, 300, 260, 340], [6, 6, 4, 0, 0]), ([10, 10, 30, 90], [9, 3, 3, 0, 0])],
)
def test_candidate_region_counts_per_level(gt, expected):
    assert _region_counts(gt)[0] == expected


def test_points_on_the_region_border_are_out():
    # P3 rows y = 308 and y = 332 lie exactly on the clipped region's border (gt y1/y2 +- 8 px).
    _, cells = _region_counts([200, 300, 260, 340])
    p3 = cells[(cells[:, 2] - cells[:, 0]) == 8]
    centres = sorted(((p3[:, 0] + p3[:, 2]) / 2).tolist()), sorted(set(((p3[:, 1] + p3[:, 3]) / 2).tolist()))
    assert sorted(set(centres[0])) == [220, 228, 236] and centres[1] == [316, 324]


def test_radius_zero_is_the_whole_gt():
    cells, _ = PointGenerator((8,), offset=0.5)([torch.zeros(1, 1, 8, 8)])
    inside = candidate_region(cells, torch.tensor([[0.0, 0, 24, 16]]), radius=0.0)
    assert int(inside.sum()) == 3 * 2  # x in {4, 12, 20}, y in {4, 12}


# ----------------------------------------------------------------------------- C4: quality and main positive
C4_PROB = [0.50, 0.90, 0.10, 0.30, 0.20]
C4_IOU = [0.80, 0.50, 0.90, 0.00, 0.60]


def test_poto_quality_values():
    q = poto_quality(_col(C4_PROB), _col(C4_IOU), 0.8)
    assert q.tolist() == pytest.approx([0.728226, 0.562373, 0.579955, 0.0, 0.481645], abs=1e-6)


def _c4(topk=7, t=0.6):
    prob, iou = _col(C4_PROB)[:, None], _col(C4_IOU)[:, None]
    return o2f_assign(prob, iou, torch.ones(5, 1, dtype=torch.bool), torch.tensor([3]), topk=topk, soft_t=t)


@pytest.mark.parametrize(
    "iters_done, expected",
    [(0, [1, 0.600000, 0.066667, 0, 0.133333]), (1100, [1, 0.200000, 0.022222, 0, 0.044444]),
     (600, [1, 0.381818, 0.042424, 0, 0.084848])],
)
def test_one_positive_and_soft_anchors(iters_done, expected):
    # Epochs 0, 11 and 6 of 12 at 100 iterations per epoch.
    result = _c4(t=soft_label_scale(iters_done, 1200, epochs=12))
    assert result.labels.tolist() == [3, 3, 3, 0, 3] and result.matched_idx.tolist() == [0, 0, 0, -1, 0]
    assert result.soft_labels.tolist() == pytest.approx(expected, abs=1e-6)
    assert result.soft_weights.tolist() == pytest.approx([1.0, 0.4, 0.4, 0, 0.4])


def test_top_2_keeps_the_best_quality_and_one_soft_anchor():
    result = _c4(topk=2)
    assert result.labels.tolist() == [3, 0, 3, 0, 0]
    assert result.soft_labels.tolist() == pytest.approx([1.0, 0, 0.6, 0, 0])  # P3 is its own P_g: t = T
    assert result.soft_weights.tolist() == pytest.approx([1.0, 0, 0.4, 0, 0])


# ----------------------------------------------------------------------------- C5: conflicts
def test_conflict_goes_to_the_gt_of_higher_quality():
    prob = _col([[0.8, 0.1], [0.6, 0.7], [0.2, 0.5], [0.1, 0.4]])
    iou = _col([[0.9, 0.2], [0.7, 0.9], [0.3, 0.6], [0.0, 0.5]])
    expected = _col([[0.879047, 0.174110], [0.678748, 0.855881], [0.276632, 0.578516], [0, 0.478176]])
    torch.testing.assert_close(poto_quality(prob, iou), expected, atol=1e-6, rtol=0)
    result = o2f_assign(prob, iou, torch.ones(4, 2, dtype=torch.bool), torch.tensor([1, 2]), topk=2, soft_t=0.45)
    assert result.matched_idx.tolist() == [0, 1, 1, -1]
    assert result.labels.tolist() == [1, 2, 2, 0]
    assert result.soft_labels.tolist() == pytest.approx([1, 1, 0.45, 0])
    assert result.soft_weights.tolist() == pytest.approx([1, 1, 0.4, 0])
    assert int((result.labels > 0).sum()) == 3


def test_points_outside_the_region_are_never_candidates():
    prob, iou = _col(C4_PROB)[:, None], _col(C4_IOU)[:, None]
    inside = torch.tensor([[False], [True], [True], [True], [True]])
    result = o2f_assign(prob, iou, inside, torch.tensor([1]), topk=7)
    assert result.matched_idx.tolist() == [-1, 0, 0, -1, 0]
    assert result.soft_labels[2].item() == 1.0  # P3 (0.579955) is now the best


def test_a_gt_without_any_overlapping_prediction_gets_no_positive():
    prob = _col([[0.5, 0.5], [0.4, 0.4]])
    iou = _col([[0.3, 0.0], [0.2, 0.0]])
    result = o2f_assign(prob, iou, torch.ones(2, 2, dtype=torch.bool), torch.tensor([1, 2]))
    assert result.matched_idx.tolist() == [0, 0]


# ----------------------------------------------------------------------------- C6: schedule
@pytest.mark.parametrize("epochs, last", [(12, 11), (36, 35), (50, 49)])
def test_schedule_ends(epochs, last):
    ipe = 10
    assert soft_label_scale(0, epochs * ipe, epochs=epochs) == pytest.approx(0.6)
    assert soft_label_scale(last * ipe, epochs * ipe, epochs=epochs) == pytest.approx(0.2)


def test_schedule_values_and_iteration_mapping():
    assert soft_label_scale(600, 1200, epochs=12) == pytest.approx(0.381818, abs=1e-6)
    assert soft_label_scale(18 * 10, 360, epochs=36) == pytest.approx(0.394286, abs=1e-6)
    t = [soft_label_scale(it, 1200, epochs=12) for it in (0, 99, 100, 1199, 1200, 5000)]
    assert t == pytest.approx([0.6, 0.6, 0.563636, 0.2, 0.2, 0.2], abs=1e-6)
    # The 12-epoch table of o2f §4.1.
    table = [soft_label_scale(e * 100, 1200, epochs=12) for e in range(12)]
    expected = [0.6, 0.563636, 0.527273, 0.490909, 0.454545, 0.418182, 0.381818, 0.345455, 0.309091, 0.272727,
                0.236364, 0.2]
    assert table == pytest.approx(expected, abs=1e-6)
    # ITERS_PER_EPOCH overrides MAX_ITER / EPOCHS; one epoch means no decay.
    assert soft_label_scale(150, 1200, epochs=12, iters_per_epoch=50) == pytest.approx(0.490909, abs=1e-6)
    assert soft_label_scale(900, 1000, epochs=1) == 0.6
    assert soft_label_scale(0, 0, epochs=12) == 0.6  # no iterations: no division by zero


def test_linear_schedule_is_smooth():
    t = [soft_label_scale(it, 11, mode="linear") for it in (0, 1, 5, 10, 20)]
    assert t == pytest.approx([0.6, 0.56, 0.4, 0.2, 0.2])
    assert soft_label_scale(0, 1, mode="linear") == 0.6
    with pytest.raises(ValueError, match="MODEL.O2F.SCHEDULE_MODE"):
        soft_label_scale(0, 10, mode="cosine")


# ----------------------------------------------------------------------------- C10 and a per-gt reference
def reference_assign(prob, iou, inside, labels, k, t, alpha=0.8):
    """o2f §4 steps 4-6 written out with Python loops over gts and points (no ties)."""
    num_points, num_gts = len(prob), len(prob[0])
    quality = [[prob[i][g] ** (1 - alpha) * iou[i][g] ** alpha if inside[i][g] else 0.0 for g in range(num_gts)]
               for i in range(num_points)]
    matching = [[0.0] * num_gts for _ in range(num_points)]
    for g in range(num_gts):
        k_g = min(k, sum(1 for i in range(num_points) if inside[i][g] and iou[i][g] > 0))
        for i in sorted(range(num_points), key=lambda i: -quality[i][g])[:k_g]:
            matching[i][g] = quality[i][g]
    out_labels, out_gt, out_t, out_w = [0] * num_points, [-1] * num_points, [0.0] * num_points, [0.0] * num_points
    for i in range(num_points):
        best = max(range(num_gts), key=lambda g: matching[i][g])
        if matching[i][best] > 0:
            out_labels[i], out_gt[i] = labels[best], best
    for g in range(num_gts):
        members = [i for i in range(num_points) if out_gt[i] == g]
        if not members:
            continue
        main = max(members, key=lambda i: quality[i][g])
        out_t[main], out_w[main] = 1.0, 1.0
        soft = [i for i in members if i != main]
        if soft:
            top = max(prob[i][g] for i in soft)
            for i in soft:
                out_t[i], out_w[i] = t * prob[i][g] / top, 0.4
    return out_labels, out_gt, out_t, out_w


def _random_problem(seed, num_points=60, num_gts=6):
    g = torch.Generator().manual_seed(seed)
    prob = torch.rand(num_points, num_gts, generator=g, dtype=torch.float64) * 0.9 + 0.05
    iou = torch.rand(num_points, num_gts, generator=g, dtype=torch.float64)
    iou = torch.where(torch.rand(num_points, num_gts, generator=g) < 0.3, torch.zeros_like(iou), iou)
    inside = torch.rand(num_points, num_gts, generator=g) < 0.6
    labels = torch.randint(1, 5, (num_gts,), generator=g)
    return prob, iou, inside, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("topk", [1, 4, 7])
def test_matches_the_per_gt_reference(seed, topk):
    prob, iou, inside, labels = _random_problem(seed)
    result = o2f_assign(prob, iou, inside, labels, topk=topk, soft_t=0.5)
    ref = reference_assign(prob.tolist(), iou.tolist(), inside.tolist(), labels.tolist(), topk, 0.5)
    assert result.labels.tolist() == ref[0] and result.matched_idx.tolist() == ref[1]
    assert result.soft_labels.tolist() == pytest.approx(ref[2], abs=1e-12)
    assert result.soft_weights.tolist() == pytest.approx(ref[3])


@pytest.mark.parametrize("seed", range(4))
def test_invariants(seed):
    k = 7
    prob, iou, inside, labels = _random_problem(seed, num_points=200, num_gts=8)
    a = o2f_assign(prob, iou, inside, labels, topk=k, soft_t=0.35)
    assigned = a.matched_idx >= 0
    assert torch.equal(assigned, a.labels > 0) and torch.equal(assigned, a.soft_weights > 0)
    for g in range(len(labels)):
        mine = a.matched_idx == g
        main = mine & (a.soft_labels == 1)
        soft = mine & ~main
        assert int(main.sum()) <= 1 and int(soft.sum()) <= k - 1
        assert int(mine.sum()) <= min(k, int((inside[:, g] & (iou[:, g] > 0)).sum()))
        assert bool(mine.any()) == bool(main.any())
        assert (inside[mine, g]).all() and (iou[mine, g] > 0).all()
        assert (a.labels[mine] == labels[g]).all()
        if soft.any():
            assert (a.soft_labels[soft] > 0).all() and (a.soft_labels[soft] <= 0.35).all()
            assert a.soft_labels[soft].max().item() == 0.35
    assert set(a.soft_weights[assigned].tolist()) <= {1.0, 0.4}
    # Labels do not depend on T; soft labels scale with it.
    b = o2f_assign(prob, iou, inside, labels, topk=k, soft_t=0.7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.matched_idx, b.matched_idx)
    soft = assigned & (a.soft_labels < 1)
    torch.testing.assert_close(b.soft_labels[soft], a.soft_labels[soft] * 2)
    # Permuting the gts changes nothing but the gt indices.
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    c = o2f_assign(prob[:, perm], iou[:, perm], inside[:, perm], labels[perm], topk=k, soft_t=0.35)
    assert torch.equal(c.labels, a.labels)
    assert torch.equal(torch.where(c.matched_idx >= 0, perm[c.matched_idx], -1), a.matched_idx)
    assert torch.equal(c.soft_labels, a.soft_labels) and torch.equal(c.soft_weights, a.soft_weights)


def _image_problem(seed, num_gts=5, size=128):
    g = torch.Generator().manual_seed(seed)
    cells, counts = PointGenerator(STRIDES, offset=0.5)([torch.zeros(1, 1, size // s, size // s) for s in STRIDES])
    xy = torch.rand(num_gts, 2, generator=g) * (size - 40)
    gt_boxes = torch.cat([xy, xy + 8 + torch.rand(num_gts, 2, generator=g) * 60], dim=1)
    labels = torch.randint(1, 4, (num_gts,), generator=g)
    joint = torch.rand(len(cells), 3, generator=g) * 0.5
    centres = (cells[:, :2] + cells[:, 2:]) / 2
    spread = torch.rand(len(cells), 4, generator=g) * 40
    pred = torch.cat([centres, centres], 1) + torch.tensor([-1.0, -1, 1, 1]) * spread
    return cells, counts, gt_boxes, labels, joint, pred


@pytest.mark.parametrize("seed", range(3))
def test_assigned_points_lie_strictly_inside_the_centre_region_of_their_level(seed):
    cells, counts, gt_boxes, labels, joint, pred = _image_problem(seed)
    a = o2f_assign_points(cells, counts, gt_boxes, labels, joint, pred, topk=7, soft_t=0.6)
    pos = a.labels > 0
    assert pos.any()
    x, y = (cells[pos, 0] + cells[pos, 2]) / 2, (cells[pos, 1] + cells[pos, 3]) / 2
    stride = cells[pos, 2] - cells[pos, 0]
    gt = gt_boxes[a.matched_idx[pos]]
    cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    assert ((x - cx).abs() < 1.5 * stride).all() and ((y - cy).abs() < 1.5 * stride).all()
    assert ((x > gt[:, 0]) & (x < gt[:, 2]) & (y > gt[:, 1]) & (y < gt[:, 3])).all()
    assert torch.equal(a.matched_boxes[pos], gt) and not a.matched_boxes[~pos].any()
    assert torch.equal(a.labels[pos], labels[a.matched_idx[pos]])


def test_point_assignment_uses_the_joint_probability_at_the_gt_class_and_the_predicted_iou():
    cells, counts, gt_boxes, labels, joint, pred = _image_problem(7)
    a = o2f_assign_points(cells, counts, gt_boxes, labels, joint, pred, topk=4, soft_t=0.3)
    prob = joint[:, labels - 1]
    b = o2f_assign(prob, pairwise_iou(pred, gt_boxes), candidate_region(cells, gt_boxes), labels, topk=4, soft_t=0.3)
    assert torch.equal(a.matched_idx, b.matched_idx) and torch.equal(a.soft_labels, b.soft_labels)
    # Predictions that miss every gt give no positive at all.
    far = torch.tensor([[1000.0, 1000, 1010, 1010]]).expand_as(pred)
    assert not (o2f_assign_points(cells, counts, gt_boxes, labels, joint, far).labels > 0).any()


def test_pairwise_iou_is_continuous_with_a_floored_union():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [3, 3, 3, 3]])
    expected = torch.tensor([[1, 25 / 175], [25 / 175, 1], [0, 0]])
    torch.testing.assert_close(pairwise_iou(boxes, boxes[:2]), expected)
    assert pairwise_iou(boxes[2:], boxes[2:]).item() == 0  # empty boxes: union floored, no NaN


def test_no_gts_and_no_grad():
    cells, counts, gt_boxes, labels, joint, pred = _image_problem(1)
    empty = o2f_assign_points(cells, counts, gt_boxes[:0], labels[:0], joint, pred)
    assert not empty.labels.any() and (empty.matched_idx == -1).all()
    assert not empty.matched_boxes.any() and not empty.soft_labels.any() and not empty.soft_weights.any()
    joint.requires_grad_(True)
    a = o2f_assign_points(cells, counts, gt_boxes, labels, joint, pred.requires_grad_(True))
    assert not any(t.requires_grad for t in a)
