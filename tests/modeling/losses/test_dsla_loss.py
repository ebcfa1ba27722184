"""DSLA losses: the hand-worked values of dsla.md §8.5-8.6 and the loss-side invariants of §8.7."""
import math

import pytest
import torch

import atss_core.modeling.losses.dsla as dsla_losses
from atss_core.modeling.assigners import SmoothAssignment, dsla_assign
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses import dsla_loss, quality_focal_loss
from atss_core.modeling.losses.dsla import aligned_iou, box_loss, soft_targets
from atss_core.modeling.utils import DensePredictions

LN2 = math.log(2)


# ----------------------------------------------------------------------------- QFL (§8.6)
def _qfl(logits, label, score):
    return quality_focal_loss(torch.tensor([logits]), torch.tensor([label]), torch.tensor([score])).sum().item()


def test_qfl_hand_values():
    assert _qfl([0.0, 0.0], 1, 0.5) == pytest.approx(LN2 * 0.25, abs=1e-6)
    assert _qfl([math.log(3), 0.0], 1, 0.5) == pytest.approx(0.225599, abs=1e-6)
    assert _qfl([-math.log(3), 0.0], 0, 0.0) == pytest.approx(0.191267, abs=1e-6)
    # Ignored rows (label -1) cost nothing.
    assert _qfl([3.0, -2.0], -1, 0.0) == 0


def test_qfl_modulating_factor_is_not_detached():
    x = torch.tensor([[math.log(3)]], dtype=torch.float64, requires_grad=True)
    quality_focal_loss(x, torch.tensor([1]), torch.tensor([0.5], dtype=torch.float64)).sum().backward()
    # A detached |t - p|^2 would give 0.0625 * (p - t) = 0.015625.
    assert x.grad.item() == pytest.approx(0.0940926, abs=1e-6)


def test_qfl_matches_float64_reference_with_gradcheck():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, -1, 2])
    scores = torch.rand(6, dtype=torch.float64, generator=g)
    out = quality_focal_loss(logits, labels, scores)
    p = logits.detach().sigmoid()
    for i, label in enumerate(labels.tolist()):
        for k in range(3):
            y = scores[i].item() if label == k + 1 else 0.0
            pk = p[i, k].item()
            ref = abs(y - pk) ** 2 * -(y * math.log(pk) + (1 - y) * math.log(1 - pk)) if label >= 0 else 0.0
            assert out[i, k].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert torch.autograd.gradcheck(lambda x: quality_focal_loss(x, labels, scores), (logits,))


# ----------------------------------------------------------------------------- box losses (§8.5, §8.6)
def _box(*v):
    return torch.tensor([v], dtype=torch.float32)


def test_iou_and_soft_targets():
    u = aligned_iou(_box(0, 0, 100, 30), _box(0, 0, 100, 60))
    assert u.item() == pytest.approx(0.5)
    s = torch.tensor([0.413670])
    assert soft_targets(s, u).item() == pytest.approx(0.206835, abs=1e-6)
    assert soft_targets(s, u, iou_coupling=False).item() == pytest.approx(0.413670, abs=1e-6)
    assert soft_targets(s, u, iou_coupling=False, iou_only=True).item() == pytest.approx(0.5)
    u2 = aligned_iou(_box(2, 0, 102, 60), _box(0, 0, 100, 60))
    assert u2.item() == pytest.approx(5880 / 6120, abs=1e-6)
    assert soft_targets(s, u2).item() == pytest.approx(0.397448, abs=1e-5)


def test_iou_is_the_same_in_stride_units():
    point = torch.tensor([[32.0, 16.0]])
    for unit in (1.0, 16.0):
        pred = torch.tensor([[32.0, 16, 68, 14]]) / unit
        target = torch.tensor([[32.0, 16, 68, 44]]) / unit
        p = point / unit
        to_box = lambda d: torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1)  # noqa: E731
        assert aligned_iou(to_box(pred), to_box(target)).item() == pytest.approx(0.5, abs=1e-6)


def test_box_loss_values():
    assert box_loss(_box(0, 0, 100, 30), _box(0, 0, 100, 60), "iou").item() == pytest.approx(LN2, abs=1e-6)
    assert box_loss(_box(0, 0, 100, 30), _box(0, 0, 100, 60), "giou").item() == pytest.approx(0.5, abs=1e-6)
    assert box_loss(_box(10, 10, 50, 50), _box(0, 0, 40, 40), "giou").item() == pytest.approx(0.688696, abs=1e-6)
    # mmdet floors union and enclosing area at eps instead of adding it (dsla §3.2): equal
    # boxes cost exactly 0 even when tiny (adding eps would give 1e-6 / 1.01e-4 = 0.0099 here).
    tiny = _box(0, 0, 0.01, 0.01).double()
    assert box_loss(tiny, tiny, "giou").item() == 0
    # Disjoint boxes: -ln of the floored IoU, finite.
    assert box_loss(_box(0, 0, 1, 1), _box(5, 5, 6, 6), "iou").item() == pytest.approx(-math.log(1e-6), rel=1e-6)
    with pytest.raises(ValueError, match="IOU_LOSS_TYPE"):
        box_loss(_box(0, 0, 1, 1), _box(0, 0, 1, 1), "smooth_l1")


# ----------------------------------------------------------------------------- the full loss
# One P4 point at (32, 16) (cell = stride-16 box around it), gt A = (0, 0, 100, 60), class 3 (label 4).
CELL = torch.tensor([[24.0, 8.0, 40.0, 24.0]])
GT_A = torch.tensor([[0.0, 0.0, 100.0, 60.0]])


def _one_point(smooth, label=4, box=GT_A):
    return SmoothAssignment(torch.tensor([label]), torch.tensor([0]), box.clone(), torch.tensor([smooth]))


def _predictions(logits, distances, requires_grad=False):
    cls = torch.tensor([[logits]], dtype=torch.float32, requires_grad=requires_grad)
    reg = torch.tensor([[distances]], dtype=torch.float32, requires_grad=requires_grad)
    return DensePredictions(cls, reg, None)


def test_regression_loss_weighted_by_smooth_label():
    out = dsla_loss(_predictions([0.0] * 4, [32, 16, 68, 14]), [_one_point(0.413670)], CELL, LTRBCoder(), reg_loss_weight=1.0)
    assert out["loss_bbox"].item() == pytest.approx(0.413670 * LN2, abs=1e-6)  # 0.286734
    out = dsla_loss(
        _predictions([0.0] * 4, [32, 16, 68, 14]), [_one_point(0.413670)], CELL, LTRBCoder(), loss_type="giou"
    )
    assert out["loss_bbox"].item() == pytest.approx(0.206835, abs=1e-6)


def test_norm_reg_targets_gives_the_same_losses():
    pixels = dsla_loss(_predictions([0.5, -1, 2, 0], [32, 16, 68, 14]), [_one_point(0.41367)], CELL, LTRBCoder())
    strides = dsla_loss(
        _predictions([0.5, -1, 2, 0], [2, 1, 68 / 16, 14 / 16]), [_one_point(0.41367)], CELL, LTRBCoder(in_strides=True)
    )
    for k in pixels:
        assert pixels[k].item() == pytest.approx(strides[k].item(), rel=1e-5)


def _qfl_ref(logits, target_channel, t):
    """Independent float64 QFL of one row."""
    total = 0.0
    for k, x in enumerate(logits):
        p = 1 / (1 + math.exp(-x))
        y = t if k == target_channel else 0.0
        total += abs(y - p) ** 2 * -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total


def test_classification_loss_uses_the_iou_coupled_target():
    logits = [0.3, -1.0, 0.2, 1.5]
    out = dsla_loss(_predictions(logits, [32, 16, 68, 14]), [_one_point(0.413670)], CELL, LTRBCoder(), cls_loss_weight=2.0)
    # t = 0.5 * 0.41367 on channel 3; normaliser max(t, 1) = 1.
    assert out["loss_cls"].item() == pytest.approx(2 * _qfl_ref(logits, 3, 0.206835), rel=1e-5)
    off = dsla_loss(
        _predictions(logits, [32, 16, 68, 14]), [_one_point(0.413670)], CELL, LTRBCoder(), cls_loss_weight=1.0,
        iou_coupling=False,
    )
    assert off["loss_cls"].item() == pytest.approx(_qfl_ref(logits, 3, 0.413670), rel=1e-5)


def test_normalisers_are_floored_soft_sums():
    # Two images, each a positive with s = 1 and a perfect box (u = 1): sum t = 2.
    cells = CELL.expand(1, 4)
    preds = DensePredictions(
        torch.tensor([[[math.log(3), 0.0]], [[math.log(3), 0.0]]]),
        torch.tensor([[[32.0, 16, 68, 44]], [[32.0, 16, 68, 44]]]),
        None,
    )
    a = SmoothAssignment(torch.tensor([1]), torch.tensor([0]), GT_A.clone(), torch.tensor([1.0]))
    out = dsla_loss(preds, [a, a], cells, LTRBCoder(), cls_loss_weight=1.0)
    row = _qfl_ref([math.log(3), 0.0], 0, 1.0)
    assert out["loss_cls"].item() == pytest.approx(2 * row / 2, rel=1e-5)
    assert out["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)


def test_batch_with_positive_and_negative_rows():
    """§8.6: {positive (ln 3, 0), t = 0.5; negative (-ln 3, 0)}: sum 0.416866, D_cls = 1."""
    cells = torch.tensor([[24.0, 8.0, 40.0, 24.0], [88.0, 8.0, 104.0, 24.0]])
    # The positive's predicted box has IoU 0.5 with its gt and s = 1, so t = 0.5.
    preds = DensePredictions(
        torch.tensor([[[math.log(3), 0.0], [-math.log(3), 0.0]]]), torch.tensor([[[32.0, 16, 68, 14], [1.0, 1, 1, 1]]]), None
    )
    a = SmoothAssignment(
        torch.tensor([1, 0]), torch.tensor([0, -1]), torch.cat([GT_A, torch.zeros(1, 4)]), torch.tensor([1.0, 0.0])
    )
    out = dsla_loss(preds, [a], cells, LTRBCoder(), cls_loss_weight=2.0)
    assert out["loss_cls"].item() == pytest.approx(0.833731, abs=1e-5)


def test_classification_loss_has_no_gradient_into_boxes():
    preds = _predictions([0.3, -1.0, 0.2, 1.5], [32, 16, 68, 14], requires_grad=True)
    out = dsla_loss(preds, [_one_point(0.413670)], CELL, LTRBCoder())
    out["loss_cls"].backward()
    assert preds.bbox_reg.grad is None or not preds.bbox_reg.grad.any()
    assert preds.cls_logits.grad.abs().sum() > 0


def test_zero_iou_positive_is_a_classification_negative_but_still_regressed():
    preds = _predictions([0.3, -1.0, 0.2, 1.5], [0.0, 0, 0, 0], requires_grad=True)
    out = dsla_loss(preds, [_one_point(0.5)], CELL, LTRBCoder())
    assert out["loss_cls"].item() == pytest.approx(2 * _qfl_ref([0.3, -1.0, 0.2, 1.5], -1, 0.0), rel=1e-5)
    # Regressed with weight s: 0.5 * -ln(max(0, 1e-6)).
    assert out["loss_bbox"].item() == pytest.approx(0.5 * -math.log(1e-6), rel=1e-5)


def test_image_without_gts_trains(monkeypatch):
    """§8.7-7 and C21: zero targets, box loss 0 with a graph, both collectives called."""
    calls = []

    def counting_mean(t):
        calls.append(float(t))
        return t.float()

    monkeypatch.setattr(dsla_losses, "reduce_mean", counting_mean)
    g = torch.Generator().manual_seed(0)
    cells = torch.tensor([[-4.0, -4, 4, 4], [4, -4, 12, 4], [-4, 4, 4, 12]])
    logits = torch.randn(1, 3, 2, generator=g).requires_grad_()
    reg = torch.rand(1, 3, 4, generator=g).requires_grad_()
    a = dsla_assign(cells, [3, 0, 0, 0, 0], torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    out = dsla_loss(DensePredictions(logits, reg, None), [a], cells, LTRBCoder())
    assert calls == [0.0, 0.0]
    assert out["loss_bbox"].item() == 0 and out["loss_bbox"].requires_grad
    p = logits.detach().double().sigmoid()
    ref = (p**2 * -torch.log(1 - p)).sum().item() * 2.0  # lambda_cls = 2, D_cls = max(0, 1)
    assert out["loss_cls"].item() == pytest.approx(ref, rel=1e-5)
    (out["loss_cls"] + out["loss_bbox"]).backward()
    assert reg.grad is not None and not reg.grad.any()


def test_soft_target_invariants_on_random_scene():
    """§8.7-1, 4-6: 0 <= t <= s <= 1, {t > 0} within {s > 0}, one class per row."""
    g = torch.Generator().manual_seed(5)
    xs = torch.arange(0, 128, 8.0)
    y, x = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([x.flatten(), y.flatten()], 1)
    cells = torch.cat([pts - 4, pts + 4], 1)
    gts = torch.tensor([[5.0, 7, 60, 50], [30, 20, 120, 110], [70, 3, 100, 40]])
    a = dsla_assign(cells, [len(cells), 0, 0, 0, 0], gts, torch.tensor([1, 2, 3]))
    n = len(cells)
    logits = torch.randn(1, n, 3, generator=g)
    reg = torch.rand(1, n, 4, generator=g) * 40
    captured = {}

    def spy(logits_, labels_, scores_, gamma):
        captured.update(labels=labels_, scores=scores_)
        return quality_focal_loss(logits_, labels_, scores_, gamma)

    orig = dsla_losses.quality_focal_loss
    dsla_losses.quality_focal_loss = spy
    try:
        dsla_loss(DensePredictions(logits, reg, None), [a], cells, LTRBCoder())
    finally:
        dsla_losses.quality_focal_loss = orig
    t, labels, s = captured["scores"], captured["labels"], a.smooth
    assert (s > 0).sum() > 10
    assert ((t >= 0) & (t <= s + 1e-7) & (s <= 1)).all()
    assert not (t > 0)[s == 0].any()
    assert torch.equal(labels > 0, t > 0)
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3}
