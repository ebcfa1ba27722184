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

X = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.float64).view(1, 1, 3, 3)
ONE = torch.ones(1, 1, 1, 1, dtype=torch.float64)


def _const_offset(dy, dx, channels=2, size=3):
    off = torch.empty(1, channels, size, size, dtype=torch.float64)
    off[:, 0::2] = dy
    off[:, 1::2] = dx
    return off


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
def test_hand_worked_sampling(dy, dx, expected, device):
    out = deform_conv(X.to(device), _const_offset(dy, dx).to(device), ONE.to(device))
    assert torch.equal(out[0, 0].cpu(), torch.tensor(expected, dtype=torch.float64))


def test_mask_scales_samples():
    mask = torch.full((1, 1, 3, 3), 0.5, dtype=torch.float64)
    out = modulated_deform_conv(X, _const_offset(0, 0.5), mask, ONE)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.75, 1.25, 0.75], dtype=torch.float64))


def test_gradients_at_zero_offset():
    # kernels.md §7.5: forward differences, the bottom/right border sees 0 outside.
    x = X.clone().requires_grad_()
    offset = torch.zeros(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    modulated_deform_conv(x, offset, mask, ONE).sum().backward()
    assert torch.equal(offset.grad[0, 0], torch.tensor([[3.0, 3, 3], [3, 3, 3], [-7, -8, -9]], dtype=torch.float64))
    assert torch.equal(offset.grad[0, 1], torch.tensor([[1.0, 1, -3], [1, 1, -6], [1, 1, -9]], dtype=torch.float64))
    assert torch.equal(mask.grad, X)


def test_per_channel_sampling_groups():
    # DW use: groups = deformable_groups = 2, 1x1 ones weight.
    x2 = torch.cat([X, 10 * X], dim=1)
    offset = torch.zeros(1, 4, 3, 3, dtype=torch.float64)
    offset[:, 1] = 0.5  # channel 0: dx 0.5
    offset[:, 2] = 0.5  # channel 1: dy 0.5
    out = deform_conv(x2, offset, torch.ones(2, 1, 1, 1, dtype=torch.float64), groups=2, deformable_groups=2)
    assert torch.equal(out[0, 0, 0], torch.tensor([1.5, 2.5, 1.5], dtype=torch.float64))
    assert torch.equal(out[0, 1], torch.tensor([[25.0, 35, 45], [55, 65, 75], [35, 40, 45]], dtype=torch.float64))


def test_offset_layout_pin():
    # 3x3 kernel that only has the centre tap (k = 4): channel 8 is its dy, 9 its dx.
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = 1
    offset = torch.zeros(1, 18, 3, 3, dtype=torch.float64)
    offset[:, 8] = 1
    out = deform_conv(X, offset, w, padding=1)
    assert torch.equal(out[0, 0], torch.tensor([[4.0, 5, 6], [7, 8, 9], [0, 0, 0]], dtype=torch.float64))
    offset.zero_()
    offset[:, 9] = 1
    out = deform_conv(X, offset, w, padding=1)
    assert torch.equal(out[0, 0], torch.tensor([[2.0, 3, 0], [5, 6, 0], [8, 9, 0]], dtype=torch.float64))


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, groups",
    [((3, 3), 1, 1, 1, 1), ((3, 3), 2, 1, 2, 1), ((3, 3), 1, 1, 1, 2), ((2, 3), (1, 2), (1, 0), (2, 1), 1)],
)
def test_zero_offset_unit_mask_is_conv(kernel, stride, padding, dilation, groups, device):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, device=device)
    w = torch.randn(6, 4 // groups, *kernel, dtype=torch.float64, device=device)
    b = torch.randn(6, dtype=torch.float64, device=device)
    ref = F.conv2d(x, w, b, stride, padding, dilation, groups)
    k = kernel[0] * kernel[1]
    offset = torch.zeros(2, 2 * k, *ref.shape[-2:], dtype=torch.float64, device=device)
    mask = torch.ones(2, k, *ref.shape[-2:], dtype=torch.float64, device=device)
    out = modulated_deform_conv(x, offset, mask, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_modules_match_torchvision_forward_and_grads():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 7, 6, dtype=torch.float64, requires_grad=True)
    for groups, dg in [(1, 1), (2, 3), (2, 2)]:
        m = ModulatedDeformConv(6, 4, 3, stride=1, padding=1, groups=groups, deformable_groups=dg).double()
        offset = (3 * torch.randn(2, 2 * dg * 9, 7, 6, dtype=torch.float64)).requires_grad_()
        mask = torch.rand(2, dg * 9, 7, 6, dtype=torch.float64).requires_grad_()
        out = m(x, offset, mask)
        ref = deform_conv2d(x, offset, m.weight, m.bias, padding=(1, 1), mask=mask)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, (x, offset, mask, m.weight, m.bias), g)
        refs = torch.autograd.grad(ref, (x, offset, mask, m.weight, m.bias), g)
        for a, b in zip(grads, refs):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

        v1 = DeformConv(6, 4, 3, stride=2, padding=1, groups=groups, deformable_groups=dg, bias=True).double()
        with torch.no_grad():
            v1.bias.normal_()
        off1 = 3 * torch.randn(2, 2 * dg * 9, 4, 3, dtype=torch.float64)
        ref1 = deform_conv2d(x, off1, v1.weight, v1.bias, stride=(2, 2), padding=(1, 1))
        torch.testing.assert_close(v1(x, off1), ref1, rtol=0, atol=1e-12)


def test_parameter_init_and_keys():
    m = ModulatedDeformConv(64, 32, 3, groups=2)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    assert m.weight.shape == (32, 32, 3, 3)
    bound = 1 / math.sqrt(64 * 9)  # in_channels, not in/groups (kernels.md §3.6)
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert torch.equal(m.bias, torch.zeros(32))
    assert list(DeformConv(8, 8, 3).state_dict()) == ["weight"]


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


def test_dfconv2d_splits_offsets_and_mask():
    torch.manual_seed(2)
    m = DFConv2d(4, 6, deformable_groups=2).double()
    assert m.offset.out_channels == 54
    with torch.no_grad():
        m.offset.weight.normal_(std=0.3)
        m.offset.bias.normal_()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
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


def test_pack_at_init_is_half_conv():
    torch.manual_seed(3)
    m = ModulatedDeformConvPack(4, 5, 3, padding=1).double()
    with torch.no_grad():
        m.bias.normal_()
    assert torch.equal(m.conv_offset_mask.weight, torch.zeros(27, 4, 3, 3, dtype=torch.float64))
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
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


def test_autocast_and_bfloat16():
    # autocast gives bf16 offsets with fp32 weights; torchvision's CPU kernel has no bf16.
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
