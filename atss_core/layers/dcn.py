"""Deformable convolution v1/v2 (kernels.md §3).

Both versions run through one compiled op, ``atss_core::deform_conv_forward``
(csrc/deform_conv.cpp, CPU and CUDA kernels; DCNv1 passes no mask), whose
gradient op ``deform_conv_backward`` is wired in here with
``torch.library.register_autograd``, next to its fake (shape) kernels. Where
no kernel is built for the input's device, ``torchvision.ops.deform_conv2d``
computes the same thing.

Layout (same as torchvision and the original CUDA kernels): for kernel tap
``k = i * kw + j`` and deformable group ``d``, offset channel ``d*2K + 2k`` is
the row shift (dy) and ``d*2K + 2k + 1`` the column shift (dx); mask channel
``d*K + k`` scales the same tap. K = kh * kw, D = deformable_groups. A sample
is bilinear with zeros outside the map.

float16/bfloat16 (or mixed, as under autocast) inputs are computed in float32
and the result is cast back to the input dtype.
"""
import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from ._ops import compiled_op


def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1):
    """DCNv1 without bias.

    Shapes: input [N, C, H, W]; offset [N, 2*D*K, Ho, Wo]; weight
    [Cout, C/groups, kh, kw] -> [N, Cout, Ho, Wo]. stride/padding/dilation are
    ints or (h, w) pairs. Gradients flow to input, offset and weight.
    """
    return _deform_conv2d(input, offset, None, weight, None, stride, padding, dilation, groups, deformable_groups)


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
):
    """DCNv2: each sampled value is multiplied by ``mask`` before the weights.

    Shapes: as :func:`deform_conv`, plus mask [N, D*K, Ho, Wo] and optional
    bias [Cout]. Gradients flow to all five tensors.
    """
    return _deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups)


def _deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
    """Both versions; ``mask=None`` is DCNv1 and ``bias`` is optional for either."""
    _check_inputs(input, offset, mask, weight, groups, deformable_groups)
    x, offset, mask, weight, bias = _as_compute_dtype(input, offset, mask, weight, bias)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    op = compiled_op("deform_conv_forward", x.device)
    if op is None:
        # torchvision reads groups and deformable_groups off the shapes.
        out = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask=mask)
    else:
        out = op(x, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups)
    return out.to(input.dtype)


def _check_inputs(input, offset, mask, weight, groups, deformable_groups):
    if input.dim() != 4:
        raise ValueError(f"deformable conv expects a 4-D input [N, C, H, W], got shape {tuple(input.shape)}")
    channels = input.shape[1]
    if weight.shape[1] * groups != channels:
        raise ValueError(
            f"weight {tuple(weight.shape)} with groups={groups} expects {weight.shape[1] * groups} "
            f"input channels, got {channels}"
        )
    if channels % deformable_groups != 0:
        raise ValueError(f"input channels {channels} are not divisible by deformable_groups={deformable_groups}")
    taps = weight.shape[2] * weight.shape[3]
    if offset.shape[1] != 2 * deformable_groups * taps:
        raise ValueError(
            f"offset has {offset.shape[1]} channels; deformable_groups={deformable_groups} and a "
            f"{weight.shape[2]}x{weight.shape[3]} kernel need {2 * deformable_groups * taps}"
        )
    if mask is not None and mask.shape[1] != deformable_groups * taps:
        raise ValueError(
            f"mask has {mask.shape[1]} channels; deformable_groups={deformable_groups} and a "
            f"{weight.shape[2]}x{weight.shape[3]} kernel need {deformable_groups * taps}"
        )


def _as_compute_dtype(*tensors):
    """Cast to one float32 or float64 dtype: the kernels take no half types, and
    autocast hands over mixed dtypes (bf16 offsets, fp32 weights)."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return [None if t is None else t.to(dtype) for t in tensors]


def _output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - (dilation * (kernel - 1) + 1)) // stride + 1


def _register_compiled_op():
    """Autograd and fake kernels of the compiled op (no-op without it)."""
    if compiled_op("deform_conv_forward", torch.device("cpu")) is None:
        return

    def setup_context(ctx, inputs, output):
        input, offset, mask, weight, bias, *params = inputs
        ctx.save_for_backward(input, offset, mask, weight, bias)
        ctx.params = params

    def backward(ctx, grad_out):
        input, offset, mask, weight, bias = ctx.saved_tensors
        grads = list(
            torch.ops.atss_core.deform_conv_backward(grad_out, input, offset, mask, weight, bias, *ctx.params)
        )
        # The op returns empty tensors for an absent mask or bias.
        if mask is None:
            grads[2] = None
        if bias is None:
            grads[4] = None
        return (*grads, None, None, None, None, None)

    torch.library.register_autograd("atss_core::deform_conv_forward", backward, setup_context=setup_context)

    @torch.library.register_fake("atss_core::deform_conv_forward")
    def _forward_fake(input, offset, mask, weight, bias, stride, padding, dilation, groups, deformable_groups):
        out_h, out_w = (
            _output_size(input.shape[2 + i], weight.shape[2 + i], stride[i], padding[i], dilation[i]) for i in (0, 1)
        )
        return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))

    @torch.library.register_fake("atss_core::deform_conv_backward")
    def _backward_fake(grad_out, input, offset, mask, weight, bias, *params):
        def like_or_empty(t):
            return input.new_empty((0,)) if t is None else torch.empty_like(t)

        return tuple(like_or_empty(t) for t in (input, offset, mask, weight, bias))


_register_compiled_op()


class _DeformConvBase(nn.Module):
    """Parameters and init shared by :class:`DeformConv` and :class:`ModulatedDeformConv`.

    weight [Cout, Cin/groups, kh, kw] ~ U(+-1/sqrt(Cin*kh*kw)) (Cin, not
    Cin/groups, as the original); bias [Cout] = 0 when present, else no key.
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
        deformable_groups=1, bias=False,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups={groups}")
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels {in_channels} must be divisible by deformable_groups={deformable_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformConv(_DeformConvBase):
    """DCNv1 module: ``forward(x [N,C,H,W], offset [N,2*D*K,Ho,Wo]) -> [N,Cout,Ho,Wo]``."""

    def forward(self, x, offset):
        return _deform_conv2d(
            x, offset, None, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            self.deformable_groups,
        )


class ModulatedDeformConv(_DeformConvBase):
    """DCNv2 module (bias on by default): ``forward(x, offset, mask [N,D*K,Ho,Wo])``."""

    def __init__(self, *args, bias=True, **kwargs):
        super().__init__(*args, bias=bias, **kwargs)

    def forward(self, x, offset, mask):
        return modulated_deform_conv(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.groups, self.deformable_groups,
        )


class ModulatedDeformConvPack(ModulatedDeformConv):
    """DCNv2 that predicts its own offsets and mask with ``conv_offset_mask``.

    ``conv_offset_mask`` [D*3*K, Cin, kh, kw] starts at zero, so at init the
    offsets are 0 and the mask is sigmoid(0) = 0.5: the output is
    0.5 * conv(x) + bias. Its output splits into three equal chunks
    (o1, o2, m): offset = cat(o1, o2), mask = sigmoid(m). Unlike the original,
    the offset conv sees all Cin channels and uses the dilation (kernels.md
    §3.7), which only matters for groups > 1 or dilation > 1.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = nn.Conv2d(
            self.in_channels, self.deformable_groups * 3 * taps, self.kernel_size, self.stride,
            self.padding, self.dilation, bias=True,
        )
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x):
        o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        return super().forward(x, torch.cat((o1, o2), dim=1), torch.sigmoid(m))
