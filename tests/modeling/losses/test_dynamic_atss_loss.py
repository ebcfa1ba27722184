"""Dynamic ATSS losses: atss_heads §8.3, check C15, the normaliser fix and C16."""
import math

import pytest
import torch

from atss_core.modeling.anchors import AnchorGenerator
from atss_core.modeling.assigners import dynamic_atss_assign
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import dynamic_atss_loss, quality_focal_loss
from atss_core.modeling.utils import DensePredictions

PRIOR_LOGIT = -math.log(99)
Y_C5 = 176 / 289  # anchor 5's +1 IoU with the C5 gt; also its predicted IoU at zero deltas
GIOU_C10 = 0.467320


def _qfl(logit, label, score, num_classes=1):
    return quality_focal_loss(torch.tensor([[logit] * num_classes]), torch.tensor([label]), torch.tensor([score]))


def test_c15_values():
    assert _qfl(0.0, 1, 0.9).item() == pytest.approx(0.16 * math.log(2), abs=1e-6)  # 0.110904
    assert _qfl(math.log(4), 1, 0.6).item() == pytest.approx(0.04 * 0.777661, abs=1e-6)  # 0.031106
    assert _qfl(0.0, 0, 0.9).item() == pytest.approx(0.25 * math.log(2), abs=1e-6)  # no alpha
    assert _qfl(0.0, -1, 0.9).item() == 0
    # Label 2 of 2 classes: channel 0 is a negative, channel 1 the positive.
    two = _qfl(0.0, 2, 0.9, num_classes=2)[0].tolist()
    assert two == pytest.approx([0.25 * math.log(2), 0.16 * math.log(2)], abs=1e-6)


def test_c15_equals_the_original_logs_where_finite_and_stays_finite_beyond():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(-1, 4, (64,), generator=g)
    y = torch.rand(64, generator=g, dtype=torch.float64)
    p = x.sigmoid()
    positive = labels[:, None] == torch.arange(1, 4)
    original = torch.where(
        positive,
        -(y[:, None] - p).abs() ** 2 * (y[:, None] * torch.log(p) + (1 - y[:, None]) * torch.log(1 - p)),
        -(p**2) * torch.log(1 - p),
    ) * (labels[:, None] >= 0)
    assert torch.allclose(quality_focal_loss(x, labels, y), original, atol=1e-12)

    x = torch.tensor([[30.0, -30.0], [-30.0, 30.0]], requires_grad=True)
    loss = quality_focal_loss(x, torch.tensor([1, 0]), torch.tensor([0.3, 0.0]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    assert loss[0, 0].item() == pytest.approx(0.7**2 * 30 * 0.7, rel=1e-4)  # |y - 1|^2 * BCE(30, 0.3)
    assert loss[1, 1].item() == pytest.approx(30.0, rel=1e-4)  # 1^2 * softplus(30)


def _scene(with_gt=True, iou_logit=0.0):
    """C5 toy (20 anchors, gt label 7) at zero deltas: anchor 5 is the one positive."""
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    anchors, per_level = gen([torch.empty(1, 0, 4, 4), torch.empty(1, 0, 2, 2)])
    gts = torch.tensor([[4.0, 5.0, 22.0, 15.0]])[: int(with_gt)]
    pred_boxes = BoxCoder("BOX").decode(torch.zeros(20, 4), anchors)
    assignment = dynamic_atss_assign(anchors, per_level, gts, torch.tensor([7])[: int(with_gt)], pred_boxes, topk=2)
    preds = DensePredictions(
        torch.full((1, 20, 80), PRIOR_LOGIT, requires_grad=True),
        torch.zeros(1, 20, 4, requires_grad=True),
        torch.full((1, 20), iou_logit, requires_grad=True),
    )
    return preds, [assignment], anchors


def _loss(preds, assignments, anchors):
    return dynamic_atss_loss(preds, assignments, anchors, BoxCoder("BOX"), gamma=2.0, reg_loss_weight=2.0)


def _expected_cls(num_pos=1, num_rows=20, num_classes=80):
    p = 0.01
    positive = (Y_C5 - p) ** 2 * -(Y_C5 * math.log(p) + (1 - Y_C5) * math.log(1 - p))
    negative = p**2 * -math.log(1 - p)
    return num_pos * positive + (num_rows * num_classes - num_pos) * negative


def test_one_gt_losses():
    losses = _loss(*_scene())
    assert set(losses) == {"loss_cls", "loss_reg", "loss_IoU"}
    assert losses["loss_cls"].item() == pytest.approx(_expected_cls(), rel=1e-5)
    # One positive: the predicted-IoU weight cancels against its own sum.
    assert losses["loss_reg"].item() == pytest.approx(2 * GIOU_C10, abs=1e-5)
    assert losses["loss_IoU"].item() == pytest.approx(math.log(2), abs=1e-6)
    # An IoU logit of 2: BCE against y = 176/289.
    iou_loss = _loss(*_scene(iou_logit=2.0))["loss_IoU"].item()
    assert iou_loss == pytest.approx(-(Y_C5 * math.log(1 / (1 + math.exp(-2))) + (1 - Y_C5) * math.log(1 - 1 / (1 + math.exp(-2)))))


def test_c16_zero_gt_image():
    preds, assignments, anchors = _scene(with_gt=False)
    losses = _loss(preds, assignments, anchors)
    assert losses["loss_cls"].item() == pytest.approx(1600 * 0.01**2 * -math.log(0.99), rel=1e-5)
    assert losses["loss_reg"].item() == 0 and losses["loss_IoU"].item() == 0
    sum(losses.values()).backward()
    assert preds.bbox_reg.grad is not None and preds.centerness.grad is not None


def test_zero_predicted_ious_give_a_finite_box_loss():
    preds, (a,), anchors = _scene()
    losses = _loss(preds, [a._replace(pred_ious=torch.zeros_like(a.pred_ious))], anchors)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_reg"].item() == 0


def test_normaliser_collectives_run_on_every_rank(two_ranks):
    # This rank: 1 positive with t = 176/289; the other rank: 3 positives, sum t = 1.5.
    fake = two_ranks(3, 1.5)
    losses = _loss(*_scene())
    assert fake.calls == 2
    assert losses["loss_cls"].item() == pytest.approx(_expected_cls() / 2, rel=1e-5)
    assert losses["loss_reg"].item() == pytest.approx(2 * GIOU_C10 * Y_C5 / ((Y_C5 + 1.5) / 2), abs=1e-5)
    assert losses["loss_IoU"].item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    # A rank without positives still joins both all-reduces (the original skipped the second).
    fake = two_ranks(3, 1.5)
    losses = _loss(*_scene(with_gt=False))
    assert fake.calls == 2 and losses["loss_reg"].item() == 0
