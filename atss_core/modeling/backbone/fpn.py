"""Feature pyramid with extra P6/P7 levels (framework §3.2)."""
import torch.nn.functional as F
from torch import nn

from atss_core.layers import Conv2d


class FPN(nn.Module):
    """Top-down pyramid over the body's outputs.

    Args:
        in_channels_list: channels of each body output, in order; 0 skips that
            output (C2 for the RetinaNet-style bodies). Module names are
            numbered by position from 1, so [0, 512, 1024, 2048] gives
            ``fpn_inner2..4`` (1x1 laterals) and ``fpn_layer2..4`` (3x3).
        conv_block: ``make_conv(in, out, kernel_size)`` from
            :func:`~atss_core.modeling.make_layers.conv_with_kaiming_uniform`.
        top_blocks: module mapping (last body output, last FPN output) to a
            list of extra levels, e.g. :class:`LastLevelP6P7`, or None.

    Shapes: list of body maps [N, C_k, H_k, W_k] -> tuple of [N, out, H_k, W_k]
    for the used levels, then the top blocks' outputs.
    """

    def __init__(self, in_channels_list, out_channels, conv_block, top_blocks=None):
        super().__init__()
        self.used_levels = [k for k, c in enumerate(in_channels_list) if c > 0]
        if not self.used_levels:
            raise ValueError(f"FPN needs at least one input with channels > 0, got {list(in_channels_list)}")
        self.inner_blocks = []
        self.layer_blocks = []
        for k in self.used_levels:
            inner, layer = f"fpn_inner{k + 1}", f"fpn_layer{k + 1}"
            self.add_module(inner, conv_block(in_channels_list[k], out_channels, 1))
            self.add_module(layer, conv_block(out_channels, out_channels, 3))
            self.inner_blocks.append(inner)
            self.layer_blocks.append(layer)
        self.top_blocks = top_blocks

    def forward(self, x):
        feats = [x[k] for k in self.used_levels]
        last = getattr(self, self.inner_blocks[-1])(feats[-1])
        results = [getattr(self, self.layer_blocks[-1])(last)]
        for feat, inner, layer in zip(feats[-2::-1], self.inner_blocks[-2::-1], self.layer_blocks[-2::-1]):
            lateral = getattr(self, inner)(feat)
            # Upsample to the lateral's size (ATSS), not by 2 (maskrcnn-benchmark):
            # the same for inputs padded to 32, robust otherwise.
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, getattr(self, layer)(last))
        if self.top_blocks is not None:
            results.extend(self.top_blocks(x[-1], results[-1]))
        return tuple(results)


class LastLevelP6P7(nn.Module):
    """P6 = p6(P5 or C5) (3x3/2, no ReLU before); P7 = p7(ReLU(P6)) (3x3/2).

    The source is P5 iff ``in_channels == out_channels``, as in the original:
    the choice follows the channel count, which ``MODEL.RETINANET.USE_C5``
    sets through the builder (C5 width if True, FPN width if False).
    Init: kaiming_uniform(a=1), bias 0.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.p6 = Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.use_P5 = in_channels == out_channels

    def forward(self, c5, p5):
        p6 = self.p6(p5 if self.use_P5 else c5)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]
