"""O2F losses: the hand-worked checks C7 (soft focal loss) and C8 (weighted GIoU) of o2f.md §11,
the no-positive fix (§5.2), and the cross-rank normalisers (§5.3)."""
import math

import pytest
import torch
import torchvision

from atss_core.modeling.assigners.o2f import O2FAssignment
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses.o2f import clamped_giou_loss, o2f_loss, soft_focal_loss
from atss_core.modeling.utils import DensePredictions, joint_scores

CODER = LTRBCoder(in_strides=True)
# sigmoid(40) is 1.0 in float64: the joint probability is then the class probability itself.
SURE = 40.0


def _assignment(labels, soft_labels, soft_weights, boxes):
    labels = torch.tensor(labels)
    return O2FAssignment(
        labels,
        torch.where(labels > 0, 0, -1),
        torch.tensor(boxes, dtype=torch.float64),
        torch.tensor(soft_labels, dtype=torch.float64),
        torch.tensor(soft_weights, dtype=torch.float64),
    )


# ----------------------------------------------------------------------------- C7: classification
C7_PROB = [[0.6, 0.1], [0.4, 0.2], [0.3, 0.05]]
C7_TARGETS = ([1, 1, 0], [1.0, 0.3, 0.0], [1.0, 0.4, 0.0])


def _c7_targets():
    labels, soft_labels, soft_weights = C7_TARGETS
    as64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return torch.tensor(labels), as64(soft_labels), as64(soft_weights)


def test_soft_focal_loss_entries():
    prob = torch.tensor(C7_PROB, dtype=torch.float64)
    entries = soft_focal_loss(prob, *_c7_targets())
    expected = [
        [-math.log(0.6), 0.75 * 0.01 * -math.log(0.9)],
        [0.4 * (-0.3 * math.log(0.4) - 0.7 * math.log(0.6)), 0.75 * 0.04 * -math.log(0.8)],
        [0.75 * 0.09 * -math.log(0.7), 0.75 * 0.0025 * -math.log(0.95)],
    ]
    torch.testing.assert_close(entries, torch.tensor(expected, dtype=torch.float64))
    assert entries.tolist()[0][0] == pytest.approx(0.510826, abs=1e-6)
    assert entries.tolist()[1] == pytest.approx([0.252986, 0.006694], abs=1e-6)
    assert entries.tolist()[2] == pytest.approx([0.024076, 0.000096], abs=1e-6)
    assert entries.sum().item() == pytest.approx(0.795468, abs=1e-6)


def test_soft_entry_gradient_vanishes_at_the_target():
    prob = torch.tensor(C7_PROB, dtype=torch.float64, requires_grad=True)
    soft_focal_loss(prob, *_c7_targets()).sum().backward()
    assert prob.grad[1, 0].item() == pytest.approx(0.4 * 0.1 / 0.24, abs=1e-9)  # 0.166667
    at_target = torch.tensor([[0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    soft_focal_loss(at_target, torch.tensor([1]), *torch.tensor([[0.3], [0.4]], dtype=torch.float64)).sum().backward()
    assert at_target.grad[0, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_logs_are_clamped_like_binary_cross_entropy():
    prob = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    entries = soft_focal_loss(prob, torch.tensor([1]), torch.tensor([1.0]), torch.tensor([1.0]))
    assert entries.tolist() == [[100.0, 75.0]]  # -ln 0 -> 100; 0.75 * 1 * 100


def _c7_inputs():
    cells = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8]], dtype=torch.float64)
    prob = torch.tensor([C7_PROB], dtype=torch.float64)
    logits = torch.log(prob / (1 - prob)).requires_grad_(True)
    objectness = torch.full((1, 3), SURE, dtype=torch.float64, requires_grad=True)
    reg = torch.full((1, 3, 4), 0.5, dtype=torch.float64, requires_grad=True)
    box = [0.0, 0, 24, 8]
    assignment = _assignment(*C7_TARGETS, [box, box, [0.0] * 4])
    return DensePredictions(logits, reg, objectness), [assignment], cells


def test_classification_loss_is_normalised_by_the_assigned_points():
    predictions, assignments, cells = _c7_inputs()
    assert joint_scores(predictions).tolist()[0][1] == pytest.approx([0.4, 0.2])
    losses = o2f_loss(predictions, assignments, cells, CODER)
    assert losses["loss_cls"].item() == pytest.approx(0.397734, abs=1e-6)
    # Gradient reaches the objectness branch through the joint probability only.
    losses["loss_cls"].backward()
    assert predictions.centerness.grad is not None and predictions.cls_logits.grad.abs().sum() > 0


def test_objectness_gets_the_gradient_of_the_joint_probability():
    logits = torch.tensor([[[0.3, -1.2]]], dtype=torch.float64, requires_grad=True)
    objectness = torch.tensor([[0.7]], dtype=torch.float64, requires_grad=True)
    assignment = _assignment([1], [1.0], [1.0], [[0.0, 0, 16, 16]])
    cells = torch.tensor([[4.0, 4, 12, 12]], dtype=torch.float64)
    reg = torch.ones(1, 1, 4, dtype=torch.float64)
    o2f_loss(DensePredictions(logits, reg, objectness), [assignment], cells, CODER)["loss_cls"].backward()
    s = torch.sigmoid(torch.tensor([0.3, -1.2], dtype=torch.float64))
    o = torch.sigmoid(torch.tensor(0.7, dtype=torch.float64))
    p = s * o
    # d/dobj [-ln p0 + 0.75 p1^2 (-ln(1 - p1))] with dp/dobj = p (1 - o).
    neg = 0.75 * (2 * p[1] * -torch.log(1 - p[1]) + p[1] ** 2 / (1 - p[1]))
    expected = (-1 / p[0]) * p[0] * (1 - o) + neg * p[1] * (1 - o)
    assert objectness.grad.item() == pytest.approx(expected.item(), rel=1e-9)


# ----------------------------------------------------------------------------- C8: regression
def _c8_inputs(pred_pixels):
    cells = torch.tensor([[46.0, 46, 54, 54], [40, 48, 48, 56], [100, 100, 108, 108]], dtype=torch.float64)
    reg = torch.tensor([pred_pixels + [[1.0, 1, 1, 1]]], dtype=torch.float64) / 8  # in strides of 8
    reg.requires_grad_(True)
    logits = torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True)
    objectness = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    gt = [40.0, 40, 60, 60]
    assignment = _assignment([2, 2, 0], [1.0, 0.5, 0.0], [1.0, 0.4, 0.0], [gt, gt, [0.0] * 4])
    return DensePredictions(logits, reg, objectness), [assignment], cells


def test_regression_loss_weighted_by_target_centerness():
    predictions, assignments, cells = _c8_inputs([[10.0, 10, 30, 10], [6.0, 12, 16, 8]])
    loss = o2f_loss(predictions, assignments, cells, CODER)["loss_bbox"].item()
    w = math.sqrt(1 / 6)
    assert w == pytest.approx(0.408248, abs=1e-6)
    assert loss == pytest.approx(2 * (1 * 0.5 + w * (1 - 20 / 22)) / (1 + w), rel=1e-6)
    assert loss == pytest.approx(0.762811, abs=1e-6)
    exact = o2f_loss(*_c8_inputs([[10.0, 10, 10, 10], [4.0, 12, 16, 8]]), CODER)["loss_bbox"]
    assert exact.item() == 0


def test_giou_agrees_with_torchvision_and_floors_empty_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, 2, generator=g, dtype=torch.float64) * 50
    pred = torch.cat([xy[:, 0], xy[:, 0] + torch.rand(50, 2, generator=g, dtype=torch.float64) * 40], 1)
    target = torch.cat([xy[:, 1], xy[:, 1] + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 40], 1)
    expected = torchvision.ops.generalized_box_iou_loss(pred, target, eps=0.0)
    torch.testing.assert_close(clamped_giou_loss(pred, target), expected, rtol=1e-12, atol=1e-12)
    point = torch.tensor([[5.0, 5, 5, 5]], dtype=torch.float64)
    assert clamped_giou_loss(point, point).item() == 1.0  # 0 / eps IoU, no NaN


def test_no_assigned_point_gives_a_zero_box_loss_that_keeps_the_graph():
    predictions, _, cells = _c8_inputs([[10.0, 10, 30, 10], [6.0, 12, 16, 8]])
    empty = _assignment([0, 0, 0], [0.0] * 3, [0.0] * 3, [[0.0] * 4] * 3)
    losses = o2f_loss(predictions, [empty], cells, CODER)
    # The original returned bbox_preds.sum() here (o2f §5.2): 2.56 for these distances.
    assert losses["loss_bbox"].item() == 0 and losses["loss_bbox"].grad_fn is not None
    assert losses["loss_cls"].item() > 0 and torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()
    assert predictions.bbox_reg.grad is not None and not predictions.bbox_reg.grad.any()


# ----------------------------------------------------------------------------- normalisers over ranks
def test_normalisers_are_means_over_ranks(two_ranks):
    single = o2f_loss(*_c8_inputs([[10.0, 10, 30, 10], [6.0, 12, 16, 8]]), CODER)
    fake = two_ranks(6.0, 1.0)  # the other rank: 6 assigned points, sum of centerness 1
    both = o2f_loss(*_c8_inputs([[10.0, 10, 30, 10], [6.0, 12, 16, 8]]), CODER)
    assert fake.calls == 2
    w = 1 + math.sqrt(1 / 6)
    # (reduce_mean works in float32)
    assert both["loss_cls"].item() == pytest.approx(single["loss_cls"].item() * 2 / 4, rel=1e-6)
    assert both["loss_bbox"].item() == pytest.approx(single["loss_bbox"].item() * w / ((w + 1) / 2), rel=1e-6)


def test_a_rank_without_points_still_joins_both_reductions(two_ranks):
    predictions, _, cells = _c8_inputs([[10.0, 10, 30, 10], [6.0, 12, 16, 8]])
    empty = _assignment([0, 0, 0], [0.0] * 3, [0.0] * 3, [[0.0] * 4] * 3)
    fake = two_ranks(0.0, 0.0)
    losses = o2f_loss(predictions, [empty], cells, CODER)
    assert fake.calls == 2 and losses["loss_bbox"].item() == 0
    # With no assigned point anywhere the floors apply: max(mean count, 1) for cls.
    alone = soft_focal_loss(
        joint_scores(predictions).reshape(3, 2),
        empty.labels, empty.soft_labels, empty.soft_weights,
    ).sum()
    assert losses["loss_cls"].item() == pytest.approx(alone.item(), rel=1e-12)
