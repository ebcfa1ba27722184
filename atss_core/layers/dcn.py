"""Deformable convolution v1/v2 (kernels.md §3).

The compute lives in :func:`deform_conv` and :func:`modulated_deform_conv` so
that swapping ``torchvision.ops.deform_conv2d`` for our own kernels stays local
to these two functions.

Layout (same as torchvision and the original CUDA kernels): for kernel tap
``k = i * kw + j`` and deformable group ``d``, offset channel ``d*2K + 2k`` is
the row shift (dy) and ``d*2K + 2k + 1`` the column shift (dx); mask channel
``d*K + k`` scales the same tap. K = kh * kw, D = deformable_groups.
"""
import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d


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
    """Cast to one dtype torchvision's kernels accept: autocast hands over mixed
    dtypes (bf16 offsets, fp32 weights) and the CPU kernel has no bfloat16."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    if dtype == torch.bfloat16 or any(t is not None and t.dtype != dtype for t in tensors):
        dtype = torch.promote_types(dtype, torch.float32)
    return [None if t is None else t.to(dtype) for t in tensors]


def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1):
    """DCNv1 without bias.

    Shapes: input [N, C, H, W]; offset [N, 2*D*K, Ho, Wo]; weight
    [Cout, C/groups, kh, kw] -> [N, Cout, Ho, Wo]. stride/padding/dilation are
    ints or (h, w) pairs. Gradients flow to input, offset and weight.
    """
    _check_inputs(input, offset, None, weight, groups, deformable_groups)
    x, offset, weight = _as_compute_dtype(input, offset, weight)
    out = deform_conv2d(x, offset.contiguous(), weight, None, _pair(stride), _pair(padding), _pair(dilation))
    return out.to(input.dtype)


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
):
    """DCNv2: each sampled value is multiplied by ``mask`` before the weights.

    Shapes: as :func:`deform_conv`, plus mask [N, D*K, Ho, Wo] and optional
    bias [Cout].
    """
    _check_inputs(input, offset, mask, weight, groups, deformable_groups)
    x, offset, mask, weight, bias = _as_compute_dtype(input, offset, mask, weight, bias)
    out = deform_conv2d(
        x, offset.contiguous(), weight, bias, _pair(stride), _pair(padding), _pair(dilation), mask=mask.contiguous()
    )
    return out.to(input.dtype)


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
        out = deform_conv(
            x, offset, self.weight, self.stride, self.padding, self.dilation, self.groups, self.deformable_groups
        )
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


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
