"""ATSS loss end to end on the C5 toy: atss_heads §6, checks C9-C12."""
import math

import pytest
import torch

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.anchors import AnchorGenerator
from atss_core.modeling.assigners import atss_assign
from atss_core.modeling.assigners.atss import background
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import atss_loss, centerness_targets
from atss_core.modeling.utils import DensePredictions

GT = torch.tensor([[4.0, 5.0, 22.0, 15.0]])
PRIOR_LOGIT = -math.log(99)
CTR_C9 = math.sqrt(8 / 10 * 3 / 7)  # 0.585540
FOCAL_C11 = 1.128382 + 1599 * 7.53775e-7  # 1.129587


def _scene(num_images=1, with_gt=(True,)):
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    anchors, per_level = gen([torch.empty(1, 0, 4, 4), torch.empty(1, 0, 2, 2)])
    assignments = [
        atss_assign(anchors, per_level, GT, torch.tensor([7]), topk=2) if g else background(20, GT[:0])
        for g in with_gt
    ]
    n = len(with_gt)
    preds = DensePredictions(
        torch.full((n, 20, 80), PRIOR_LOGIT, requires_grad=True),
        torch.zeros(n, 20, 4, requires_grad=True),
        torch.zeros(n, 20, requires_grad=True),
    )
    return preds, assignments, anchors


def _loss(preds, assignments, anchors):
    return atss_loss(preds, assignments, anchors, BoxCoder("BOX"), SigmoidFocalLoss(2.0, 0.25), reg_loss_weight=2.0)


def test_c9_centerness_target():
    t = centerness_targets(torch.tensor([[4.5, 4.5, 19.5, 19.5]]), GT)
    assert t.item() == pytest.approx(CTR_C9, abs=1e-6)


def test_c10_c11_single_positive():
    losses = _loss(*_scene())
    assert set(losses) == {"loss_cls", "loss_reg", "loss_centerness"}
    assert losses["loss_cls"].item() == pytest.approx(FOCAL_C11, abs=1e-4)
    assert losses["loss_reg"].item() == pytest.approx(0.934641, abs=1e-4)
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2), abs=1e-5)


def test_reg_loss_weight_and_per_image_sum():
    preds, assignments, anchors = _scene(with_gt=(True, True))
    losses = _loss(preds, assignments, anchors)
    # Two identical images: sums double, normalisers double -> same values.
    assert losses["loss_cls"].item() == pytest.approx(FOCAL_C11, abs=1e-4)
    assert losses["loss_reg"].item() == pytest.approx(0.934641, abs=1e-4)
    half = atss_loss(preds, assignments, anchors, BoxCoder("BOX"), SigmoidFocalLoss(2.0, 0.25), reg_loss_weight=1.0)
    assert half["loss_reg"].item() == pytest.approx(0.934641 / 2, abs=1e-4)


def test_c12_zero_positives_single_gpu():
    preds, assignments, anchors = _scene(with_gt=(False,))
    losses = _loss(preds, assignments, anchors)
    # Divisor 1: the focal sum of 1600 negatives at p = 0.01.
    assert losses["loss_cls"].item() == pytest.approx(1600 * 7.53775e-7, rel=1e-4)
    assert losses["loss_reg"].item() == 0 and losses["loss_centerness"].item() == 0
    sum(losses.values()).backward()
    assert preds.bbox_reg.grad is not None and preds.centerness.grad is not None
    assert preds.bbox_reg.grad.abs().sum() == 0


def test_c12_global_normalisers(two_ranks):
    # Spec: 3 and 5 positives -> 4 on both ranks; ctr sums 1.2 and 2.0 -> 1.6.
    # Here this rank has 1 positive (ctr* 0.585540), the other 5 and 2.0.
    fake = two_ranks(5, 2.0)
    losses = _loss(*_scene())
    assert fake.calls == 2
    num_pos_avg, sum_ctr_avg = (1 + 5) / 2, (CTR_C9 + 2.0) / 2
    assert losses["loss_cls"].item() == pytest.approx(FOCAL_C11 / num_pos_avg, abs=1e-5)
    assert losses["loss_reg"].item() == pytest.approx(0.467320 * CTR_C9 / sum_ctr_avg * 2, abs=1e-5)
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2) / num_pos_avg, abs=1e-5)


def test_c12_rank_without_positives_still_joins_collectives(two_ranks):
    fake = two_ranks(5, 2.0)
    preds, assignments, anchors = _scene(with_gt=(False,))
    losses = _loss(preds, assignments, anchors)
    assert fake.calls == 2
    assert losses["loss_cls"].item() == pytest.approx(1600 * 7.53775e-7 / 2.5, rel=1e-4)
    assert losses["loss_reg"].item() == 0


def test_c12_mean_positives_floor_is_one(two_ranks):
    two_ranks(0, 0.0)
    losses = _loss(*_scene(with_gt=(False,)))
    assert losses["loss_cls"].item() == pytest.approx(1600 * 7.53775e-7, rel=1e-4)
