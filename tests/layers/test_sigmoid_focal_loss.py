"""Sigmoid focal loss against kernels.md §7.4/§7.6, atss_heads.md C11,
float64 autograd of the naive formula and torchvision.ops.sigmoid_focal_loss."""
import math

import pytest
import torch
import torchvision

from atss_core.layers import SigmoidFocalLoss, sigmoid_focal_loss

ALPHA, GAMMA = 0.25, 2.0


def loss_and_grad(logits, targets, gamma=GAMMA, alpha=ALPHA):
    x = logits.detach().clone().requires_grad_()
    loss = sigmoid_focal_loss(x, targets, gamma, alpha)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def naive_focal(x, targets, gamma, alpha):
    """The §2.2 formula written literally (unstable at large |x|)."""
    p = torch.sigmoid(x)
    classes = torch.arange(1, x.shape[1] + 1)
    pos = (targets[:, None] == classes).to(x.dtype)
    neg = ((targets[:, None] >= 0) & (targets[:, None] != classes)).to(x.dtype)
    return -pos * alpha * (1 - p) ** gamma * torch.log(p) - neg * (1 - alpha) * p**gamma * torch.log(1 - p)


def torchvision_mapping(logits, targets, gamma, alpha):
    """kernels.md §2.6: one-hot over 1..C, ignore rows masked out."""
    classes = torch.arange(1, logits.shape[1] + 1)
    onehot = (targets[:, None] == classes).to(logits.dtype)
    valid = (targets >= 0).to(logits.dtype)[:, None]
    return torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha, gamma, "none") * valid


# ---- §7.4 element table ----
@pytest.mark.parametrize(
    "x, positive, loss, grad",
    [
        (0.0, True, 0.0433217, -0.0745717),
        (0.0, False, 0.1299651, 0.2237151),
        (2.0, True, 0.0004509, -0.0012177),
        (2.0, False, 1.2375586, 0.8075353),
        (-3.0, True, 0.6915701, -0.2816875),
        (-3.0, False, 0.0000820, 0.0002362),
    ],
)
def test_element_table(x, positive, loss, grad):
    logits = torch.tensor([[x]], dtype=torch.float64)
    targets = torch.tensor([1 if positive else 0])
    value, g = loss_and_grad(logits, targets)
    assert value.item() == pytest.approx(loss, abs=1e-7)
    assert g.item() == pytest.approx(grad, abs=1e-7)


def test_logit_zero_closed_forms():
    # atss_heads.md C11: 1/16 ln 2 and 3/16 ln 2; gradients ∓(1/16 or 3/16)(1/2 + ln 2).
    logits = torch.zeros(2, 1, dtype=torch.float64)
    value, g = loss_and_grad(logits, torch.tensor([1, 0]))
    ln2 = math.log(2)
    assert value.view(-1).tolist() == pytest.approx([ln2 / 16, 3 * ln2 / 16], abs=1e-15)
    assert g.view(-1).tolist() == pytest.approx([-(0.5 + ln2) / 16, 3 * (0.5 + ln2) / 16], abs=1e-15)


@pytest.mark.parametrize(
    "target, loss, grad",
    [
        (2, 0.1304979, (0.2237151, -0.0012177, 0.0002362)),
        (0, 1.3676057, (0.2237151, 0.8075353, 0.0002362)),
        (1, 1.2809623, (-0.0745717, 0.8075353, 0.0002362)),
        (3, 2.0590938, (0.2237151, 0.8075353, -0.2816875)),
        (-1, 0.0, (0.0, 0.0, 0.0)),
        (4, 1.3676057, (0.2237151, 0.8075353, 0.0002362)),  # > C: all negative
    ],
)
def test_module_row_table(target, loss, grad):
    x = torch.tensor([[0.0, 2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    total = SigmoidFocalLoss(GAMMA, ALPHA)(x, torch.tensor([target]))
    assert total.dim() == 0
    (g,) = torch.autograd.grad(total, x)
    assert total.item() == pytest.approx(loss, abs=1e-7)
    assert g.view(-1).tolist() == pytest.approx(list(grad), abs=1e-7)


def test_ignored_rows_have_zero_loss_and_gradient():
    logits = torch.randn(4, 6, dtype=torch.float64) * 5
    value, g = loss_and_grad(logits, torch.tensor([-1, 2, -1, 0]))
    assert torch.all(value[[0, 2]] == 0) and torch.all(g[[0, 2]] == 0)
    assert torch.all(value[[1, 3]] > 0)


def test_gamma0_alpha_half_is_half_bce():
    assert loss_and_grad(torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([1]), 0.0, 0.5)[0].item() == (
        pytest.approx(0.2015930, abs=1e-7)
    )
    logits = torch.randn(30, 5, dtype=torch.float64) * 4
    targets = torch.randint(0, 6, (30,))
    onehot = (targets[:, None] == torch.arange(1, 6)).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.0, 0.5), 0.5 * bce, rtol=0, atol=1e-14)


def test_atss_initial_state():
    # atss_heads.md C11: 20 anchors x 80 classes at the prior p = 0.01, one positive.
    logits = torch.full((20, 80), -4.59512)
    targets = torch.zeros(20, dtype=torch.int32)
    targets[7] = 13
    per_element = sigmoid_focal_loss(logits, targets, GAMMA, ALPHA)
    assert per_element[7, 12].item() == pytest.approx(1.128382, abs=1e-6)
    assert per_element[0, 0].item() == pytest.approx(7.53775e-7, rel=1e-5)
    assert SigmoidFocalLoss(GAMMA, ALPHA)(logits, targets).item() == pytest.approx(1.129587, abs=1e-6)


# ---- stability ----
def test_float32_extremes_are_finite_and_exact():
    logits = torch.tensor([[50.0], [50.0], [-100.0], [-100.0], [1e4], [-1e4]])
    value, g = loss_and_grad(logits, torch.tensor([0, 1, 1, 0, 0, 1]))
    assert torch.isfinite(value).all() and torch.isfinite(g).all()
    assert value[0].item() == pytest.approx(37.5, rel=1e-6) and g[0].item() == pytest.approx(0.75, rel=1e-6)
    assert value[1].item() == pytest.approx(0.0, abs=1e-30) and g[1].item() == pytest.approx(0.0, abs=1e-30)
    # Exact 25.0 (the legacy CUDA kernel saturated at 21.8341).
    assert value[2].item() == pytest.approx(25.0, rel=1e-6) and g[2].item() == pytest.approx(-0.25, rel=1e-6)
    assert value[4].item() == pytest.approx(7500.0, rel=1e-6) and value[5].item() == pytest.approx(2500.0, rel=1e-6)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.5, 0.25), (0.0, 0.5)])
def test_extreme_logits_match_float64_naive_where_finite(gamma, alpha):
    # Not +30: there the naive float64 1 - p already cancels to ~3 digits.
    values = [-100.0, -60.0, -30.0, -5.0, 0.0, 5.0, 20.0, 60.0, 100.0]
    logits = torch.tensor(values).repeat(2)[:, None]
    targets = torch.tensor([1] * len(values) + [0] * len(values))
    value, g = loss_and_grad(logits, targets, gamma, alpha)
    assert torch.isfinite(value).all() and torch.isfinite(g).all()

    x64 = logits.double().requires_grad_()
    naive = naive_focal(x64, targets, gamma, alpha)
    (g64,) = torch.autograd.grad(naive.sum(), x64)
    finite = torch.isfinite(naive) & torch.isfinite(g64)
    assert finite.sum() >= len(values)  # the comparison is not vacuous
    torch.testing.assert_close(value[finite].double(), naive[finite].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g[finite].double(), g64[finite], rtol=1e-5, atol=1e-6)


# ---- torchvision parity (§2.6 mapping) ----
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (1.5, 0.75), (0.0, 0.25)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torchvision(gamma, alpha, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(300, 80, generator=g, dtype=torch.float64) * 6).clamp(-20, 20).to(dtype)
    targets = torch.randint(-1, 83, (300,), generator=g)  # ignore, background, classes and > C
    value, grad = loss_and_grad(logits, targets, gamma, alpha)

    # The reference runs in float64 also for float32 inputs: torchvision's
    # float32 BCE rounds log1p(exp(-20)) to 0, ours keeps it.
    x = logits.double().requires_grad_()
    expected = torchvision_mapping(x, targets, gamma, alpha)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    if dtype == torch.float64:
        torch.testing.assert_close(value, expected.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    else:
        torch.testing.assert_close(value.double(), expected.detach(), rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-12)


# ---- dtypes, errors, gradcheck ----
def test_int32_and_int64_targets_agree():
    logits = torch.randn(10, 4)
    targets = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 0, 2, 1])
    expected = sigmoid_focal_loss(logits, targets, GAMMA, ALPHA)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets.int(), GAMMA, ALPHA), expected, rtol=0, atol=0)


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_half_logits_are_computed_in_float32(low):
    logits = (torch.randn(12, 5) * 4).to(low).requires_grad_()
    targets = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    value = sigmoid_focal_loss(logits, targets, GAMMA, ALPHA)
    assert value.dtype == torch.float32
    expected, expected_grad = loss_and_grad(logits.detach().float(), targets)
    torch.testing.assert_close(value.detach(), expected, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert grad.dtype == low
    torch.testing.assert_close(grad, expected_grad.to(low), rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="targets must be integer labels"):
        sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3), GAMMA, ALPHA)
    with pytest.raises(ValueError, match=r"targets must have shape \[R\] with R = 3"):
        sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), GAMMA, ALPHA)
    with pytest.raises(ValueError, match=r"logits must be a floating \[R, C\]"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long), GAMMA, ALPHA)


def test_module_repr_and_sum():
    module = SigmoidFocalLoss(2, 0.25)
    assert "gamma=2.0, alpha=0.25" in repr(module)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, -1])
    torch.testing.assert_close(module(logits, targets), sigmoid_focal_loss(logits, targets, 2, 0.25).sum())


def _gradcheck_inputs():
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(7, 5, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.tensor([-1, 0, 1, 3, 5, 7, 2])  # ignore, background, classes, > C
    return logits, targets


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (1.0, 0.5), (0.0, 0.25), (2.5, 0.75)])
def test_gradcheck(gamma, alpha):
    logits, targets = _gradcheck_inputs()
    fn = lambda x: sigmoid_focal_loss(x, targets, gamma, alpha)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-5, rtol=1e-3)
    assert torch.autograd.gradgradcheck(fn, (logits,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_on_every_device(device):
    logits = torch.tensor([[0.0, 2.0, -3.0]], device=device, requires_grad=True)
    total = SigmoidFocalLoss(GAMMA, ALPHA)(logits, torch.tensor([2], device=device))
    total.backward()
    assert total.item() == pytest.approx(0.1304979, abs=1e-6)
    assert logits.grad.cpu().view(-1).tolist() == pytest.approx([0.2237151, -0.0012177, 0.0002362], abs=1e-6)
