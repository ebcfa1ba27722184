"""Convolution wrappers under the ATSS names."""
import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .dcn import DeformConv, ModulatedDeformConv


class Conv2d(nn.Conv2d):
    """Plain ``nn.Conv2d``; kept as a subclass so isinstance(m, nn.Conv2d) init loops see it."""


class DFConv2d(nn.Module):
    """Deformable conv whose offsets (and v2 mask) come from a regular conv.

    Children (checkpoint keys, framework §3.6):
        offset: Conv2d(in, D*3*K (v2) or D*2*K (v1), kernel, stride, padding,
            dilation, bias=True).
        conv: ModulatedDeformConv (v2) or DeformConv (v1), ``bias`` as given.

    The first 2*D*K offset-conv channels are the (dy, dx) offsets and the rest
    the mask logits (sigmoid). The original split at 2*K whatever D was, which
    is only right for D = 1 (kernels.md §3.7).

    Init: ``offset`` kaiming_uniform(a=1) with bias 0, as the ATSS backbone;
    ``zero_init_offset=True`` zeroes it as mmcv's Pack modules do (spec C12).
    Heads that re-initialise every nn.Conv2d also reach ``offset``.

    Shapes: x [N, in, H, W] -> [N, out, Ho, Wo].
    """

    def __init__(
        self, in_channels, out_channels, with_modulated_dcn=True, kernel_size=3, stride=1, groups=1,
        padding=1, dilation=1, deformable_groups=1, bias=False, zero_init_offset=False,
    ):
        super().__init__()
        kernel_size = _pair(kernel_size)
        taps = kernel_size[0] * kernel_size[1]
        self.with_modulated_dcn = with_modulated_dcn
        self.num_offset_channels = deformable_groups * 2 * taps
        offset_out = deformable_groups * (3 if with_modulated_dcn else 2) * taps
        self.offset = Conv2d(
            in_channels, offset_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=True
        )
        if zero_init_offset:
            nn.init.zeros_(self.offset.weight)
        else:
            nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.zeros_(self.offset.bias)
        conv_cls = ModulatedDeformConv if with_modulated_dcn else DeformConv
        self.conv = conv_cls(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, deformable_groups=deformable_groups, bias=bias,
        )

    def forward(self, x):
        out = self.offset(x)
        if not self.with_modulated_dcn:
            return self.conv(x, out)
        offset = out[:, : self.num_offset_channels]
        mask = torch.sigmoid(out[:, self.num_offset_channels :])
        return self.conv(x, offset, mask)
