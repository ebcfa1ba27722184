"""Sigmoid focal loss against kernels.md §7.4/§7.6, atss_heads.md C11,
float64 autograd of the naive formula and torchvision.ops.sigmoid_focal_loss.

Most checks run twice: on the compiled kernel (through the public wrapper)
and on the pure-PyTorch reference used when the kernel is missing."""
import math

import pytest
import torch
import torchvision

from atss_core.layers import SigmoidFocalLoss, sigmoid_focal_loss
from atss_core.layers._ops import compiled_op
from atss_core.layers.sigmoid_focal_loss import sigmoid_focal_loss_reference

ALPHA, GAMMA = 0.25, 2.0
COMPILED = compiled_op("sigmoid_focal_loss", torch.device("cpu")) is not None
needs_compiled = pytest.mark.skipif(not COMPILED, reason="atss_core._C is not built")
needs_cuda_kernel = pytest.mark.skipif(
    not torch.cuda.is_available() or compiled_op("sigmoid_focal_loss", torch.device("cuda")) is None,
    reason="needs a GPU and a CUDA build",
)
IMPLS = {"compiled": sigmoid_focal_loss, "reference": sigmoid_focal_loss_reference}


@pytest.fixture(params=sorted(IMPLS))
def focal(request):
    if request.param == "compiled" and not COMPILED:
        pytest.skip("atss_core._C is not built")
    return IMPLS[request.param]


def loss_and_grad(focal, logits, targets, gamma=GAMMA, alpha=ALPHA, reduction="none"):
    x = logits.detach().clone().requires_grad_()
    loss = focal(x, targets, gamma, alpha, reduction)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def op(logits, targets, gamma=GAMMA, alpha=ALPHA, reduction="none", with_grad=True):
    return torch.ops.atss_core.sigmoid_focal_loss(logits, targets, gamma, alpha, reduction, with_grad)


def naive_focal(x, targets, gamma, alpha):
    """The §2.2 formula written literally (unstable at large |x|)."""
    p = torch.sigmoid(x)
    classes = torch.arange(1, x.shape[1] + 1)
    pos = (targets[:, None] == classes).to(x.dtype)
    neg = ((targets[:, None] >= 0) & (targets[:, None] != classes)).to(x.dtype)
    return -pos * alpha * (1 - p) ** gamma * torch.log(p) - neg * (1 - alpha) * p**gamma * torch.log(1 - p)


def torchvision_mapping(logits, targets, gamma, alpha):
    """kernels.md §2.6: one-hot over 1..C, ignore rows masked out."""
    classes = torch.arange(1, logits.shape[1] + 1, device=logits.device)
    onehot = (targets[:, None] == classes).to(logits.dtype)
    valid = (targets >= 0).to(logits.dtype)[:, None]
    return torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha, gamma, "none") * valid


def random_case(rows, cols, seed, scale=4.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(-1, cols + 3, (rows,), generator=g)  # ignore, background, classes and > C
    return logits, targets


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
def test_element_table(focal, x, positive, loss, grad):
    logits = torch.tensor([[x]], dtype=torch.float64)
    value, g = loss_and_grad(focal, logits, torch.tensor([1 if positive else 0]))
    assert value.item() == pytest.approx(loss, abs=1e-7)
    assert g.item() == pytest.approx(grad, abs=1e-7)


def test_logit_zero_closed_forms(focal):
    # atss_heads.md C11: 1/16 ln 2 and 3/16 ln 2; gradients ∓(1/16 or 3/16)(1/2 + ln 2).
    value, g = loss_and_grad(focal, torch.zeros(2, 1, dtype=torch.float64), torch.tensor([1, 0]))
    ln2 = math.log(2)
    assert value.view(-1).tolist() == pytest.approx([ln2 / 16, 3 * ln2 / 16], abs=1e-15)
    assert g.view(-1).tolist() == pytest.approx([-(0.5 + ln2) / 16, 3 * (0.5 + ln2) / 16], abs=1e-15)


ROW_TABLE = [
    (2, 0.1304979, (0.2237151, -0.0012177, 0.0002362)),
    (0, 1.3676057, (0.2237151, 0.8075353, 0.0002362)),
    (1, 1.2809623, (-0.0745717, 0.8075353, 0.0002362)),
    (3, 2.0590938, (0.2237151, 0.8075353, -0.2816875)),
    (-1, 0.0, (0.0, 0.0, 0.0)),
    (4, 1.3676057, (0.2237151, 0.8075353, 0.0002362)),  # > C: all negative
]


@pytest.mark.parametrize("target, loss, grad", ROW_TABLE)
def test_row_table_summed(focal, target, loss, grad):
    x = torch.tensor([[0.0, 2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    total = focal(x, torch.tensor([target]), GAMMA, ALPHA, "sum")
    assert total.dim() == 0
    (g,) = torch.autograd.grad(total, x)
    assert total.item() == pytest.approx(loss, abs=1e-7)
    assert g.view(-1).tolist() == pytest.approx(list(grad), abs=1e-7)


@pytest.mark.parametrize("target, loss, grad", ROW_TABLE)
def test_module_row_table(target, loss, grad):
    x = torch.tensor([[0.0, 2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    total = SigmoidFocalLoss(GAMMA, ALPHA)(x, torch.tensor([target]))
    (g,) = torch.autograd.grad(total, x)
    assert total.dim() == 0 and total.item() == pytest.approx(loss, abs=1e-7)
    assert g.view(-1).tolist() == pytest.approx(list(grad), abs=1e-7)


def test_ignored_rows_have_zero_loss_and_gradient(focal):
    logits = torch.randn(4, 6, dtype=torch.float64) * 5
    value, g = loss_and_grad(focal, logits, torch.tensor([-1, 2, -1, 0]))
    assert torch.all(value[[0, 2]] == 0) and torch.all(g[[0, 2]] == 0)
    assert torch.all(value[[1, 3]] > 0)


def test_gamma0_alpha_half_is_half_bce(focal):
    value, _ = loss_and_grad(focal, torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([1]), 0.0, 0.5)
    assert value.item() == pytest.approx(0.2015930, abs=1e-7)
    logits = torch.randn(30, 5, dtype=torch.float64) * 4
    targets = torch.randint(0, 6, (30,))
    onehot = (targets[:, None] == torch.arange(1, 6)).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    torch.testing.assert_close(focal(logits, targets, 0.0, 0.5), 0.5 * bce, rtol=0, atol=1e-14)


def test_atss_initial_state(focal):
    # atss_heads.md C11: 20 anchors x 80 classes at the prior p = 0.01, one positive.
    logits = torch.full((20, 80), -4.59512)
    targets = torch.zeros(20, dtype=torch.int32)
    targets[7] = 13
    per_element = focal(logits, targets, GAMMA, ALPHA)
    assert per_element[7, 12].item() == pytest.approx(1.128382, abs=1e-6)
    assert per_element[0, 0].item() == pytest.approx(7.53775e-7, rel=1e-5)
    assert focal(logits, targets, GAMMA, ALPHA, "sum").item() == pytest.approx(1.129587, abs=1e-6)


# ---- stability ----
def test_float32_extremes_are_finite_and_exact(focal):
    logits = torch.tensor([[50.0], [50.0], [-100.0], [-100.0], [1e4], [-1e4]])
    value, g = loss_and_grad(focal, logits, torch.tensor([0, 1, 1, 0, 0, 1]))
    assert torch.isfinite(value).all() and torch.isfinite(g).all()
    assert value[0].item() == pytest.approx(37.5, rel=1e-6) and g[0].item() == pytest.approx(0.75, rel=1e-6)
    assert value[1].item() == pytest.approx(0.0, abs=1e-30) and g[1].item() == pytest.approx(0.0, abs=1e-30)
    # Exact 25.0 (the legacy CUDA kernel saturated at 21.8341).
    assert value[2].item() == pytest.approx(25.0, rel=1e-6) and g[2].item() == pytest.approx(-0.25, rel=1e-6)
    assert value[4].item() == pytest.approx(7500.0, rel=1e-6) and value[5].item() == pytest.approx(2500.0, rel=1e-6)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.5, 0.25), (0.0, 0.5)])
def test_extreme_logits_match_float64_naive_where_finite(focal, gamma, alpha):
    # Not +30: there the naive float64 1 - p already cancels to ~3 digits.
    values = [-100.0, -60.0, -30.0, -5.0, 0.0, 5.0, 20.0, 60.0, 100.0]
    logits = torch.tensor(values).repeat(2)[:, None]
    targets = torch.tensor([1] * len(values) + [0] * len(values))
    value, g = loss_and_grad(focal, logits, targets, gamma, alpha)
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
def test_matches_torchvision(focal, gamma, alpha, dtype):
    logits, targets = random_case(300, 80, 0, scale=6.0)
    logits = logits.clamp(-20, 20).to(dtype)
    value, grad = loss_and_grad(focal, logits, targets, gamma, alpha)

    # The reference runs in float64 also for float32 inputs: torchvision's
    # float32 BCE rounds log1p(exp(-20)) to 0, ours keeps it.
    x = logits.double().requires_grad_()
    expected = torchvision_mapping(x, targets, gamma, alpha)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(value.double(), expected.detach(), **tol)
    torch.testing.assert_close(grad.double(), expected_grad, **tol)
    total = focal(logits, targets, gamma, alpha, "sum")
    total_rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(total.double(), expected.sum().detach(), rtol=total_rtol, atol=0)


@pytest.mark.parametrize("logit", [100.0, -100.0])
def test_matches_torchvision_at_saturated_logits(focal, logit):
    # Float64 where torchvision's float64 formulas are still exact.
    logits = torch.full((4, 3), logit, dtype=torch.float64)
    targets = torch.tensor([0, 1, 3, -1])
    value, grad = loss_and_grad(focal, logits, targets)
    x = logits.clone().requires_grad_()
    expected = torchvision_mapping(x, targets, GAMMA, ALPHA)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-12, atol=1e-30)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-30)


# ---- reductions, dtypes, errors ----
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_equals_sum_of_elements(focal, dtype):
    logits, targets = random_case(500, 20, 3, dtype=dtype)
    per_element, grad = loss_and_grad(focal, logits, targets)
    total, grad_of_total = loss_and_grad(focal, logits, targets, reduction="sum")
    assert total.dim() == 0 and total.dtype == dtype
    torch.testing.assert_close(total, per_element.double().sum().to(dtype), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_of_total, grad, rtol=0, atol=0)


def test_empty_inputs(focal):
    logits, targets = torch.zeros(0, 5, requires_grad=True), torch.zeros(0, dtype=torch.long)
    assert focal(logits, targets, GAMMA, ALPHA).shape == (0, 5)
    total = focal(logits, targets, GAMMA, ALPHA, "sum")
    total.backward()
    assert total.item() == 0 and logits.grad.shape == (0, 5)


def test_int32_and_int64_targets_agree(focal):
    logits, targets = random_case(10, 4, 4)
    expected = focal(logits, targets, GAMMA, ALPHA)
    torch.testing.assert_close(focal(logits, targets.int(), GAMMA, ALPHA), expected, rtol=0, atol=0)


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_half_logits_are_computed_in_float32(focal, low):
    logits, targets = random_case(12, 5, 5)
    logits = logits.to(low).requires_grad_()
    value = focal(logits, targets, GAMMA, ALPHA)
    assert value.dtype == torch.float32
    expected, expected_grad = loss_and_grad(focal, logits.detach().float(), targets)
    torch.testing.assert_close(value.detach(), expected, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert grad.dtype == low
    torch.testing.assert_close(grad, expected_grad.to(low), rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors(focal):
    with pytest.raises(ValueError, match=r"targets must be integer labels \(int32/int64\)"):
        focal(torch.zeros(3, 2), torch.zeros(3), GAMMA, ALPHA)
    with pytest.raises(ValueError, match=r"targets must have shape \[R\] with R = 3"):
        focal(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), GAMMA, ALPHA)
    with pytest.raises(ValueError, match=r"logits must be a floating \[R, C\]"):
        focal(torch.zeros(3), torch.zeros(3, dtype=torch.long), GAMMA, ALPHA)
    with pytest.raises(ValueError, match="reduction must be one of"):
        focal(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), GAMMA, ALPHA, "mean")


@needs_compiled
def test_op_rejects_bad_inputs_clearly():
    x, t = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(RuntimeError, match="targets must be int32 or int64 labels, got Short"):
        op(x, t.short())
    with pytest.raises(RuntimeError, match=r"targets must have shape \[R\] with R = 3"):
        op(x, t[:2])
    with pytest.raises(RuntimeError, match="reduction must be 'none' or 'sum', got 'mean'"):
        op(x, t, reduction="mean")


def test_module_repr_and_sum():
    module = SigmoidFocalLoss(2, 0.25)
    assert "gamma=2.0, alpha=0.25" in repr(module)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, -1])
    torch.testing.assert_close(module(logits, targets), sigmoid_focal_loss(logits, targets, 2, 0.25).sum())


# ---- autograd ----
def _gradcheck_inputs():
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(7, 5, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.tensor([-1, 0, 1, 3, 5, 7, 2])  # ignore, background, classes, > C
    return logits, targets


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (1.0, 0.5), (0.0, 0.25), (2.5, 0.75)])
def test_gradcheck(focal, gamma, alpha, reduction):
    logits, targets = _gradcheck_inputs()
    fn = lambda x: focal(x, targets, gamma, alpha, reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (2.5, 0.75)])
def test_reference_is_twice_differentiable(gamma, alpha):
    logits, targets = _gradcheck_inputs()
    fn = lambda x: sigmoid_focal_loss_reference(x, targets, gamma, alpha)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (logits,), eps=1e-6, atol=1e-5, rtol=1e-3)


@needs_compiled
def test_compiled_second_derivative_raises():
    logits, targets = _gradcheck_inputs()
    total = sigmoid_focal_loss(logits, targets, GAMMA, ALPHA, "sum")
    with pytest.raises(RuntimeError, match="first derivatives only.*sigmoid_focal_loss_reference"):
        torch.autograd.grad(total, logits, create_graph=True)


@needs_compiled
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_backward_is_saved_derivative_times_upstream(reduction):
    logits, targets = random_case(50, 7, 6)
    loss, local = op(logits, targets, reduction=reduction)
    # The forward's derivative is the closed form of §2.3 (reference autograd).
    _, expected_local = loss_and_grad(sigmoid_focal_loss_reference, logits, targets)
    torch.testing.assert_close(local, expected_local, rtol=1e-6, atol=1e-7)
    x = logits.clone().requires_grad_()
    out = sigmoid_focal_loss(x, targets, GAMMA, ALPHA, reduction)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (grad,) = torch.autograd.grad(out, x, upstream)
    torch.testing.assert_close(grad, local * upstream, rtol=0, atol=0)


@needs_compiled
def test_derivative_only_when_needed():
    logits, targets = random_case(6, 4, 7)
    assert op(logits, targets, with_grad=False)[1].numel() == 0
    with torch.no_grad():
        assert sigmoid_focal_loss(logits.requires_grad_(), targets, GAMMA, ALPHA).grad_fn is None
    # Called directly without it, the backward recomputes the derivative.
    x = logits.detach().clone().requires_grad_()
    total, _ = op(x, targets, reduction="sum", with_grad=False)
    (grad,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(grad, op(logits.detach(), targets)[1], rtol=0, atol=0)


@needs_compiled
def test_sum_does_not_depend_on_thread_count():
    logits, targets = random_case(3000, 80, 8)  # several 32k-element blocks
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = op(logits, targets, reduction="sum")[0]
        torch.set_num_threads(max(2, threads))
        multi = op(logits, targets, reduction="sum")[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, multi)


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction, with_grad", [("none", True), ("none", False), ("sum", True), ("sum", False)])
def test_opcheck(dtype, reduction, with_grad):
    logits, targets = random_case(9, 4, 9, dtype=dtype)
    args = (logits.requires_grad_(), targets, GAMMA, ALPHA, reduction, with_grad)
    torch.library.opcheck(torch.ops.atss_core.sigmoid_focal_loss.default, args)


def test_torch_compile_matches_eager():
    logits, targets = random_case(40, 6, 10)
    module = SigmoidFocalLoss(GAMMA, ALPHA)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x, y = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    expected, value = module(x, targets), compiled(y, targets)
    expected.backward()
    value.backward()
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-6, atol=0)


def test_under_autocast():
    g = torch.Generator().manual_seed(11)
    features, targets = torch.randn(30, 8, generator=g), torch.randint(-1, 6, (30,), generator=g)
    layer = torch.nn.Linear(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        total = SigmoidFocalLoss(GAMMA, ALPHA)(logits, targets)
    assert logits.dtype == torch.bfloat16 and total.dtype == torch.float32
    torch.testing.assert_close(total, SigmoidFocalLoss(GAMMA, ALPHA)(logits.float(), targets))
    total.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


# ---- devices ----
def test_on_every_device(device):
    logits = torch.tensor([[0.0, 2.0, -3.0]], device=device, requires_grad=True)
    total = SigmoidFocalLoss(GAMMA, ALPHA)(logits, torch.tensor([2], device=device))
    total.backward()
    assert total.item() == pytest.approx(0.1304979, abs=1e-6)
    assert logits.grad.cpu().view(-1).tolist() == pytest.approx([0.2237151, -0.0012177, 0.0002362], abs=1e-6)


@needs_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_cuda_kernel_matches_cpu_kernel(dtype, reduction):
    logits, targets = random_case(2000, 80, 12, scale=8.0)
    logits[:5] = torch.tensor([100.0, -100.0, 50.0, -50.0, 0.0])[:, None]
    logits = logits.to(dtype)
    cpu_loss, cpu_grad = op(logits, targets, reduction=reduction)
    cuda_loss, cuda_grad = op(logits.cuda(), targets.int().cuda(), reduction=reduction)
    assert cuda_loss.dtype == cpu_loss.dtype and cuda_grad.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_loss.cpu(), cpu_loss, **tol)
    low = dtype in (torch.float16, torch.bfloat16)  # one rounding step apart at most
    torch.testing.assert_close(cuda_grad.cpu(), cpu_grad, **(dict(rtol=1e-2, atol=1e-5) if low else tol))


@needs_cuda_kernel
def test_cuda_gradcheck():
    logits, targets = _gradcheck_inputs()
    fn = lambda x: sigmoid_focal_loss(x, targets.cuda(), GAMMA, ALPHA)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits.detach().cuda().requires_grad_(),), eps=1e-6, atol=1e-5, rtol=1e-3)
