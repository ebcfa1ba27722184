"""Deformable convolution v1/v2 against kernels.md §7.5-§7.7 (hand-worked
values), plain conv2d, torchvision.ops.deform_conv2d and float64 gradcheck,
for the compiled op and for the torchvision fallback."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from atss_core.layers import (
    DFConv2d,
    DeformConv,
    ModulatedDeformConv,
    ModulatedDeformConvPack,
    deform_conv,
    modulated_deform_conv,
)
from atss_core.layers import dcn as dcn_module
from atss_core.layers._ops import compiled_op, extension_info

COMPILED = compiled_op("deform_conv_forward", torch.device("cpu")) is not None
CUDA_OP = torch.cuda.is_available() and compiled_op("deform_conv_forward", torch.device("cuda")) is not None
needs_compiled = pytest.mark.skipif(
    not COMPILED,
    reason=f"atss_core._C has no deform_conv op (loaded: {extension_info()['available']}); "
    "build it with `pip install -e . --no-build-isolation`",
)
needs_cuda_op = pytest.mark.skipif(not CUDA_OP, reason="needs a GPU and a CUDA build of atss_core._C")

X = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.float64).view(1, 1, 3, 3)
ONE = torch.ones(1, 1, 1, 1, dtype=torch.float64)
F64 = torch.float64


@pytest.fixture(params=["compiled", "torchvision"])
def impl(request, monkeypatch):
    """Runs a test through the compiled op, then through the fallback."""
    if request.param == "compiled":
        if not COMPILED:
            pytest.skip("atss_core._C has no deform_conv op")
    else:
        monkeypatch.setattr(dcn_module, "compiled_op", lambda name, device: None)
    return request.param


def _const_offset(dy, dx, channels=2, size=3):
    off = torch.empty(1, channels, size, size, dtype=F64)
    off[:, 0::2] = dy
    off[:, 1::2] = dx
    return off


def _random_case(batch, channels, out_channels, size, kernel, stride, padding, dilation, groups, dg, dtype=F64):
    """Inputs with offsets ~ N(0, 3^2), so many samples fall outside the map."""
    k = kernel[0] * kernel[1]
    out_hw = [
        (size[i] + 2 * padding[i] - (dilation[i] * (kernel[i] - 1) + 1)) // stride[i] + 1 for i in (0, 1)
    ]
    return (
        torch.randn(batch, channels, *size, dtype=dtype),
        3 * torch.randn(batch, 2 * dg * k, *out_hw, dtype=dtype),
        torch.rand(batch, dg * k, *out_hw, dtype=dtype),
        torch.randn(out_channels, channels // groups, *kernel, dtype=dtype),
        torch.randn(out_channels, dtype=dtype),
    )


def assert_matches(out, ref, inputs, ref_inputs=None, rtol=0.0, atol=1e-12):
    """out == ref, and so are their gradients w.r.t. inputs (ref_inputs, if
    the reference ran on other tensors) for one random upstream gradient."""
    torch.testing.assert_close(out.cpu(), ref.cpu(), rtol=rtol, atol=atol)
    g = torch.randn(ref.shape, dtype=ref.dtype)
    ours = torch.autograd.grad(out, inputs, g.to(out.device))
    theirs = torch.autograd.grad(ref, inputs if ref_inputs is None else ref_inputs, g.to(ref.device))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=rtol, atol=atol)


# kernels.md §7.5, 1x1 kernel of weight 1 on X.
@pytest.mark.parametrize(
    "dy, dx, expected",
    [
        (0, 0.5, [[1.5, 2.5, 1.5], [4.5, 5.5, 3.0], [7.5, 8.5, 4.5]]),
        (0.5, 0.5, [[3, 4, 2.25], [6, 7, 3.75], [3.75, 4.25, 2.25]]),
        (0, -1, [[0, 1, 2], [0, 4, 5], [0, 7, 8]]),
        (0, -0.5, [[0.5, 1.5, 2.5], [2, 4.5, 5.5], [3.5, 7.5, 8.5]]),
        (1, -2, [[0, 0, 4], [0, 0, 7], [0, 0, 0]]),
    ],
)
def test_hand_worked_sampling(dy, dx, expected, device, impl):
    out = deform_conv(X.to(device), _const_offset(dy, dx).to(device), ONE.to(device))
    assert torch.equal(out[0, 0].cpu(), torch.tensor(expected, dtype=F64))


def test_mask_scales_samples(impl):
    mask = torch.full((1, 1, 3, 3), 0.5, dtype=F64)
    out = modulated_deform_conv(X, _const_offset(0, 0.5), mask, ONE)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.75, 1.25, 0.75], dtype=F64))


def test_gradients_at_zero_offset(device, impl):
    # kernels.md §7.5: forward differences, the bottom/right border sees 0 outside.
    x = X.to(device, copy=True).requires_grad_()
    offset = torch.zeros(1, 2, 3, 3, dtype=F64, device=device, requires_grad=True)
    mask = torch.ones(1, 1, 3, 3, dtype=F64, device=device, requires_grad=True)
    modulated_deform_conv(x, offset, mask, ONE.to(device)).sum().backward()
    assert torch.equal(offset.grad[0, 0].cpu(), torch.tensor([[3.0, 3, 3], [3, 3, 3], [-7, -8, -9]], dtype=F64))
    assert torch.equal(offset.grad[0, 1].cpu(), torch.tensor([[1.0, 1, -3], [1, 1, -6], [1, 1, -9]], dtype=F64))
    assert torch.equal(mask.grad.cpu(), X)
    # Each pixel is sampled once, by its own position.
    assert torch.equal(x.grad.cpu(), torch.ones_like(X))


def test_per_channel_sampling_groups(impl):
    # DW use: groups = deformable_groups = 2, 1x1 ones weight.
    x2 = torch.cat([X, 10 * X], dim=1)
    offset = torch.zeros(1, 4, 3, 3, dtype=F64)
    offset[:, 1] = 0.5  # channel 0: dx 0.5
    offset[:, 2] = 0.5  # channel 1: dy 0.5
    out = deform_conv(x2, offset, torch.ones(2, 1, 1, 1, dtype=F64), groups=2, deformable_groups=2)
    assert torch.equal(out[0, 0, 0], torch.tensor([1.5, 2.5, 1.5], dtype=F64))
    assert torch.equal(out[0, 1], torch.tensor([[25.0, 35, 45], [55, 65, 75], [35, 40, 45]], dtype=F64))


def test_offset_layout_pin(impl):
    # 3x3 kernel that only has the centre tap (k = 4): channel 8 is its dy, 9 its dx.
    w = torch.zeros(1, 1, 3, 3, dtype=F64)
    w[0, 0, 1, 1] = 1
    offset = torch.zeros(1, 18, 3, 3, dtype=F64)
    offset[:, 8] = 1
    out = deform_conv(X, offset, w, padding=1)
    assert torch.equal(out[0, 0], torch.tensor([[4.0, 5, 6], [7, 8, 9], [0, 0, 0]], dtype=F64))
    offset.zero_()
    offset[:, 9] = 1
    out = deform_conv(X, offset, w, padding=1)
    assert torch.equal(out[0, 0], torch.tensor([[2.0, 3, 0], [5, 6, 0], [8, 9, 0]], dtype=F64))
    offset.zero_()
    offset[:, :2] = 0.7  # tap 0 has weight 0, so its offsets change nothing
    assert torch.equal(deform_conv(X, offset, w, padding=1), X)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, groups",
    [((3, 3), 1, 1, 1, 1), ((3, 3), 2, 1, 2, 1), ((3, 3), 1, 1, 1, 2), ((2, 3), (1, 2), (1, 0), (2, 1), 1)],
)
def test_zero_offset_unit_mask_is_conv(kernel, stride, padding, dilation, groups, device, impl):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 7, dtype=F64, device=device)
    w = torch.randn(6, 4 // groups, *kernel, dtype=F64, device=device)
    b = torch.randn(6, dtype=F64, device=device)
    ref = F.conv2d(x, w, b, stride, padding, dilation, groups)
    k = kernel[0] * kernel[1]
    offset = torch.zeros(2, 2 * k, *ref.shape[-2:], dtype=F64, device=device)
    mask = torch.ones(2, k, *ref.shape[-2:], dtype=F64, device=device)
    out = modulated_deform_conv(x, offset, mask, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # Constant mask m: m * conv + b; and v2 with mask 1 is v1.
    out = modulated_deform_conv(x, offset, 0.3 * mask, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(out, 0.3 * (ref - b.view(1, -1, 1, 1)) + b.view(1, -1, 1, 1), rtol=0, atol=1e-12)
    offset = torch.randn_like(offset)
    v1 = deform_conv(x, offset, w, stride, padding, dilation, groups)
    v2 = modulated_deform_conv(x, offset, mask, w, None, stride, padding, dilation, groups)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dy, dx", [(1, 0), (0, -2), (2, 1), (-1, -1)])
def test_integer_offset_shifts_conv(dy, dx, impl):
    # kernels.md §7.5: with s = max(|dy|, |dx|), out = conv(X, padding=p + s) shifted by (s + dy, s + dx).
    torch.manual_seed(5)
    x = torch.randn(1, 2, 6, 7, dtype=F64)
    w = torch.randn(3, 2, 3, 3, dtype=F64)
    s = max(abs(dy), abs(dx))
    ref = F.conv2d(x, w, padding=1 + s)
    out = deform_conv(x, _const_offset(dy, dx, channels=18, size=1).expand(1, 18, 6, 7), w, padding=1)
    torch.testing.assert_close(out, ref[..., s + dy : s + dy + 6, s + dx : s + dx + 7], rtol=0, atol=1e-12)


# (C=6 in, 4 out, 7x6 map) kernel, stride, padding, dilation, groups, deformable groups
PARITY_CASES = [
    ((3, 3), (1, 1), (1, 1), (1, 1), 1, 1),
    ((3, 3), (2, 2), (2, 2), (2, 2), 2, 3),
    ((3, 3), (1, 1), (1, 1), (1, 1), 2, 2),
    ((2, 3), (1, 2), (1, 0), (2, 1), 1, 2),
    ((1, 1), (1, 1), (0, 0), (1, 1), 6, 6),
]


@needs_compiled
@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, dg", PARITY_CASES)
@pytest.mark.parametrize("modulated", [True, False])
def test_matches_torchvision_forward_and_grads(kernel, stride, padding, dilation, groups, dg, modulated):
    torch.manual_seed(1)
    out_channels = 6 if groups == 6 else 4
    x, offset, mask, w, b = _random_case(2, 6, out_channels, (7, 6), kernel, stride, padding, dilation, groups, dg)
    if modulated:
        inputs = [t.requires_grad_() for t in (x, offset, mask, w, b)]
        out = modulated_deform_conv(*inputs, stride, padding, dilation, groups, dg)
        ref = deform_conv2d(x, offset, w, b, stride, padding, dilation, mask=mask)
    else:
        inputs = [t.requires_grad_() for t in (x, offset, w)]
        out = deform_conv(*inputs, stride, padding, dilation, groups, dg)
        ref = deform_conv2d(x, offset, w, None, stride, padding, dilation)
    assert_matches(out, ref, inputs)


@needs_compiled
def test_matches_torchvision_across_channel_blocks():
    # 20 channels per deformable group: the CPU kernels split them 16 + 4.
    torch.manual_seed(12)
    x, offset, mask, w, b = _random_case(2, 40, 8, (5, 6), (3, 3), (1, 1), (1, 1), (1, 1), 4, 2)
    inputs = [t.requires_grad_() for t in (x, offset, mask, w, b)]
    out = modulated_deform_conv(*inputs, 1, 1, 1, 4, 2)
    ref = deform_conv2d(x, offset, w, b, padding=(1, 1), mask=mask)
    assert_matches(out, ref, inputs, atol=1e-11)


@needs_compiled
def test_float32_matches_torchvision():
    torch.manual_seed(6)
    x, offset, mask, w, b = _random_case(2, 6, 4, (9, 8), (3, 3), (1, 1), (1, 1), (1, 1), 2, 3, torch.float32)
    x.requires_grad_()
    offset.requires_grad_()
    out = modulated_deform_conv(x, offset, mask, w, b, 1, 1, 1, 2, 3)
    ref = deform_conv2d(x, offset, w, b, padding=(1, 1), mask=mask)
    assert_matches(out, ref, (x, offset), rtol=1e-4, atol=1e-4)


def test_dw_box_sampling_matches_torchvision(device, impl):
    # dw.md §2.4 / README C24: 1x1, weight ones(4,1,1,1), groups = D = 4, no mask.
    torch.manual_seed(7)
    boxes = (40 * torch.randn(2, 4, 5, 6, dtype=F64, device=device)).requires_grad_()
    offset = torch.randn(2, 8, 5, 6, dtype=F64, device=device).requires_grad_()
    weight = torch.ones(4, 1, 1, 1, dtype=F64, device=device)
    out = deform_conv(boxes, offset, weight, groups=4, deformable_groups=4)
    ref = deform_conv2d(boxes, offset, weight)
    assert_matches(out, ref, (boxes, offset), atol=1e-11)


def _gradcheck_inputs(modulated, device="cpu"):
    # kernels.md §7.6: no sample on an integer grid line, where S is not differentiable.
    torch.manual_seed(8)
    x = torch.randn(2, 4, 6, 5, dtype=F64, device=device)
    out_hw = (6, 2)  # 6x5 map, 2x3 kernel, stride (1, 2), padding (1, 0), dilation (2, 1)
    offset = torch.randint(-2, 3, (2, 2 * 2 * 6, *out_hw), device=device) + 0.2 + 0.6 * torch.rand(
        2, 24, *out_hw, dtype=F64, device=device
    )
    mask = 0.1 + 0.8 * torch.rand(2, 12, *out_hw, dtype=F64, device=device) if modulated else None
    w = torch.randn(4, 2, 2, 3, dtype=F64, device=device)
    b = torch.randn(4, dtype=F64, device=device)
    return [t.requires_grad_() if t is not None else None for t in (x, offset, mask, w, b)]


@needs_compiled
@pytest.mark.parametrize("modulated", [True, False])
def test_gradcheck(modulated):
    x, offset, mask, w, b = _gradcheck_inputs(modulated)
    params = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2, deformable_groups=2)
    if modulated:
        fn = lambda *t: modulated_deform_conv(*t, **params)  # noqa: E731
        inputs = (x, offset, mask, w, b)
    else:
        fn = lambda *t: deform_conv(*t, **params)  # noqa: E731
        inputs = (x, offset, w)
    # fast_mode checks random projections of the Jacobian; the parity tests
    # above compare every gradient element with torchvision.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


@needs_compiled
def test_opcheck():
    # Schema, fake (shape) kernel and autograd registration of the compiled op.
    x, offset, mask, w, b = _gradcheck_inputs(True)
    args = (x, offset, mask, w, b, [1, 2], [1, 0], [2, 1], 2, 2)
    torch.library.opcheck(torch.ops.atss_core.deform_conv_forward.default, args)
    v1_args = (x, offset, None, w, None, *args[5:])
    torch.library.opcheck(torch.ops.atss_core.deform_conv_forward.default, v1_args, test_utils="test_faketensor")


@needs_compiled
def test_compiled_op_is_used(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the torchvision fallback ran although the compiled op is built")

    monkeypatch.setattr(dcn_module, "deform_conv2d", fail)
    x, offset, mask, w, b = _random_case(1, 4, 3, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1, 1)
    assert modulated_deform_conv(x, offset, mask, w, b, 1, 1).shape == (1, 3, 5, 5)
    assert deform_conv(x, offset, w, 1, 1).shape == (1, 3, 5, 5)


@needs_compiled
def test_result_does_not_depend_on_im2col_step():
    # 16 ch * 9 taps * 121*121 positions > 2^21 columns per image, so the two
    # images run as two steps (csrc/deform_conv.cpp kMaxColumnElements = 2^22).
    torch.manual_seed(9)
    x, offset, mask, w, b = _random_case(2, 16, 2, (121, 121), (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, torch.float32)
    args = ([1, 1], [1, 1], [1, 1], 1, 1)
    op = torch.ops.atss_core
    out = op.deform_conv_forward(x, offset, mask, w, b, *args)
    g = torch.randn_like(out)
    grads = op.deform_conv_backward(g, x, offset, mask, w, b, *args)
    # The second image is the one at a nonzero position in its batch.
    second = [t[1:] for t in (x, offset, mask)]
    assert torch.equal(out[1:], op.deform_conv_forward(*second, w, b, *args))
    single = op.deform_conv_backward(g[1:], *second, w, b, *args)
    for j in range(3):  # input, offset and mask gradients are per image
        assert torch.equal(grads[j][1:], single[j])


@needs_compiled
def test_empty_batch():
    x = torch.zeros(0, 4, 5, 5, dtype=F64, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, dtype=F64, requires_grad=True)
    offset = torch.zeros(0, 18, 5, 5, dtype=F64)
    out = modulated_deform_conv(x, offset, torch.zeros(0, 9, 5, 5, dtype=F64), w, torch.zeros(3, dtype=F64), 1, 1)
    assert out.shape == (0, 3, 5, 5)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and x.grad.shape == x.shape


@needs_compiled
def test_op_rejects_bad_arguments_clearly():
    x, offset, mask, w, b = _random_case(1, 4, 3, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1, 1)
    op = torch.ops.atss_core.deform_conv_forward
    with pytest.raises(RuntimeError, match=r"offset must have shape \[1, 18, 5, 5\]"):
        op(x, offset[:, :9], mask, w, b, [1, 1], [1, 1], [1, 1], 1, 1)
    with pytest.raises(RuntimeError, match="mask is Float but input is Double"):
        op(x, offset, mask.float(), w, b, [1, 1], [1, 1], [1, 1], 1, 1)
    with pytest.raises(RuntimeError, match="stride must be >= 1"):
        op(x, offset, mask, w, b, [0, 1], [1, 1], [1, 1], 1, 1)
    with pytest.raises(RuntimeError, match="not divisible by deformable_groups=3"):
        op(x, offset, mask, w, b, [1, 1], [1, 1], [1, 1], 1, 3)


@needs_cuda_op
@pytest.mark.parametrize("modulated", [True, False])
def test_cuda_matches_cpu(modulated):
    # kernels.md §7.5 device consistency: 1e-5 forward, 1e-4 gradients (atomics).
    torch.manual_seed(10)
    case = _random_case(2, 6, 4, (9, 8), (3, 3), (2, 1), (1, 2), (1, 2), 2, 3, torch.float32)
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, deformable_groups=3)
    fn = modulated_deform_conv if modulated else deform_conv
    used = case if modulated else (case[0], case[1], case[3])  # v1: no mask, no bias
    cpu = [t.clone().requires_grad_() for t in used]
    cuda = [t.cuda().requires_grad_() for t in used]
    out_cpu, out_cuda = fn(*cpu, **params), fn(*cuda, **params)
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
    assert_matches(out_cuda, out_cpu, cuda, cpu, rtol=1e-4, atol=1e-4)


@needs_cuda_op
def test_cuda_gradcheck_and_determinism_alert():
    x, offset, mask, w, b = _gradcheck_inputs(True, "cuda")
    params = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2, deformable_groups=2)
    fn = lambda *t: modulated_deform_conv(*t, **params)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, offset, mask, w, b), eps=1e-6, atol=1e-5, rtol=1e-3, nondet_tol=1e-10)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="deform_conv_backward"):
            fn(x, offset, mask, w, b).sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


def test_parameter_init_and_keys():
    m = ModulatedDeformConv(64, 32, 3, groups=2)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    assert m.weight.shape == (32, 32, 3, 3)
    bound = 1 / math.sqrt(64 * 9)  # in_channels, not in/groups (kernels.md §3.6)
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert torch.equal(m.bias, torch.zeros(32))
    assert list(DeformConv(8, 8, 3).state_dict()) == ["weight"]


def test_deform_conv_module_bias(impl):
    torch.manual_seed(11)
    m = DeformConv(4, 6, 3, stride=2, padding=1, groups=2, deformable_groups=2, bias=True).double()
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(2, 4, 7, 6, dtype=F64)
    offset = 3 * torch.randn(2, 36, 4, 3, dtype=F64)
    out = m(x, offset)
    ref = deform_conv2d(x, offset, m.weight, m.bias, stride=(2, 2), padding=(1, 1))
    assert_matches(out, ref, (m.weight, m.bias))


def test_dfconv2d_head_keys_and_v1():
    # kernels.md §7.7
    m = DFConv2d(256, 256, kernel_size=3, padding=1, bias=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "offset.weight": (27, 256, 3, 3),
        "offset.bias": (27,),
        "conv.weight": (256, 256, 3, 3),
        "conv.bias": (256,),
    }
    v1 = DFConv2d(16, 16, with_modulated_dcn=False)
    assert v1.offset.out_channels == 18 and isinstance(v1.conv, DeformConv)
    assert "conv.bias" not in v1.state_dict()


def test_dfconv2d_splits_offsets_and_mask(impl):
    torch.manual_seed(2)
    m = DFConv2d(4, 6, deformable_groups=2).double()
    assert m.offset.out_channels == 54
    with torch.no_grad():
        m.offset.weight.normal_(std=0.3)
        m.offset.bias.normal_()
    x = torch.randn(1, 4, 5, 5, dtype=F64)
    o = m.offset(x)
    ref = deform_conv2d(x, o[:, :36], m.conv.weight, padding=(1, 1), mask=torch.sigmoid(o[:, 36:]))
    torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-12)


def test_dfconv2d_offset_init():
    m = DFConv2d(16, 16)
    assert torch.equal(m.offset.bias, torch.zeros(27))
    bound = math.sqrt(3 / (16 * 9))  # kaiming_uniform(a=1)
    assert 0.9 * bound < m.offset.weight.abs().max() <= bound
    z = DFConv2d(16, 16, zero_init_offset=True)
    assert torch.equal(z.offset.weight, torch.zeros_like(z.offset.weight))


def test_pack_at_init_is_half_conv(impl):
    torch.manual_seed(3)
    m = ModulatedDeformConvPack(4, 5, 3, padding=1).double()
    with torch.no_grad():
        m.bias.normal_()
    assert torch.equal(m.conv_offset_mask.weight, torch.zeros(27, 4, 3, 3, dtype=F64))
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    ref = 0.5 * F.conv2d(x, m.weight, None, padding=1) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-12)


def test_bad_channel_counts_raise_clearly():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="offset has 9 channels"):
        deform_conv(x, torch.zeros(1, 9, 5, 5), torch.ones(2, 4, 1, 1))
    with pytest.raises(ValueError, match="input channels"):
        deform_conv(x, torch.zeros(1, 2, 5, 5), torch.ones(2, 3, 1, 1))
    with pytest.raises(ValueError, match="mask has 2 channels"):
        modulated_deform_conv(x, torch.zeros(1, 2, 5, 5), torch.ones(1, 2, 5, 5), torch.ones(2, 4, 1, 1))


def test_autocast_and_bfloat16(impl):
    # autocast gives bf16 offsets with fp32 weights; the kernels compute in float32.
    torch.manual_seed(4)
    m = DFConv2d(4, 6)
    x = torch.randn(1, 4, 5, 5)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    y16 = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), ref, rtol=0.05, atol=0.05)
