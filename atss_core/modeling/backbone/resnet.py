"""ResNet / ResNeXt bodies with the maskrcnn-benchmark module names (framework §3.1, §3.6).

``ResNet.forward`` returns [C2, C3, C4, C5] (strides 4, 8, 16, 32). Checkpoint
keys: ``stem.{conv1,bn1}``, ``layer{i}.{b}.{conv1,bn1,conv2,bn2,conv3,bn3}``,
``layer{i}.0.downsample.{0,1}``.
"""
from functools import partial

import torch.nn.functional as F
from torch import nn

from atss_core.layers import Conv2d, DFConv2d, FrozenBatchNorm2d
from atss_core.modeling.make_layers import group_norm, group_norm_kwargs


def _kaiming_conv(in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1):
    conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


def _downsample(in_channels, out_channels, stride, norm_layer):
    return nn.Sequential(_kaiming_conv(in_channels, out_channels, 1, stride=stride), norm_layer(out_channels))


class Stem(nn.Module):
    """7x7/2 conv (``conv1``, no bias) -> ``bn1`` -> ReLU -> 3x3/2 max-pool. [N,3,H,W] -> [N,C,H/4,W/4]."""

    def __init__(self, out_channels=64, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self.conv1 = _kaiming_conv(3, out_channels, 7, stride=2, padding=3)
        self.bn1 = norm_layer(out_channels)

    def forward(self, x):
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, optionally deformable) -> 1x1, plus the identity or ``downsample``.

    Args:
        stride_in_1x1: stride on ``conv1`` (MSRA/caffe style) instead of
            ``conv2`` (pytorch style), spec C10.
        norm_layer: callable(C) -> norm module (``bn1``..``bn3``, ``downsample.1``).
        dcn: None, or DFConv2d options (``with_modulated_dcn``,
            ``deformable_groups``, ``zero_init_offset``) to make ``conv2``
            deformable; DFConv2d keeps its own init and has no bias.

    ``downsample`` exists iff in_channels != out_channels, and is created
    first so its parameters lead ``named_parameters()`` as in the original
    (the optimizer's param-group order depends on it).
    """

    def __init__(
        self, in_channels, bottleneck_channels, out_channels, stride=1, num_groups=1, stride_in_1x1=True,
        norm_layer=FrozenBatchNorm2d, dcn=None,
    ):
        super().__init__()
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = _downsample(in_channels, out_channels, stride, norm_layer)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _kaiming_conv(in_channels, bottleneck_channels, 1, stride=stride_1x1)
        self.bn1 = norm_layer(bottleneck_channels)
        if dcn is None:
            self.conv2 = _kaiming_conv(
                bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1, groups=num_groups
            )
        else:
            self.conv2 = DFConv2d(
                bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3, groups=num_groups,
                padding=1, bias=False, **dcn,
            )
        self.bn2 = norm_layer(bottleneck_channels)
        self.conv3 = _kaiming_conv(bottleneck_channels, out_channels, 1)
        self.bn3 = norm_layer(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu_(out + identity)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34), plus the identity or ``downsample``.

    Same signature as :class:`Bottleneck` so the stages build either;
    ``bottleneck_channels`` must equal ``out_channels``, ``num_groups`` must
    be 1 and ``stride_in_1x1`` has no meaning (the stride is on ``conv1``).
    ``downsample`` exists iff the channels or the stride change.
    """

    def __init__(
        self, in_channels, bottleneck_channels, out_channels, stride=1, num_groups=1, stride_in_1x1=True,
        norm_layer=FrozenBatchNorm2d, dcn=None,
    ):
        super().__init__()
        if bottleneck_channels != out_channels or num_groups != 1:
            raise ValueError(
                f"BasicBlock needs width == out_channels and one group, got width {bottleneck_channels}, "
                f"out_channels {out_channels}, groups {num_groups}"
            )
        if dcn is not None:
            raise ValueError("deformable conv is only supported in Bottleneck blocks (MODEL.RESNETS.STAGE_WITH_DCN)")
        self.downsample = None
        if in_channels != out_channels or stride != 1:
            self.downsample = _downsample(in_channels, out_channels, stride, norm_layer)
        self.conv1 = _kaiming_conv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = norm_layer(out_channels)
        self.conv2 = _kaiming_conv(out_channels, out_channels, 3, padding=1)
        self.bn2 = norm_layer(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu_(out + identity)


class ResNet(nn.Module):
    """Stem + four stages ``layer1..layer4``: [N,3,H,W] -> [C2, C3, C4, C5].

    Stage i (1..4) has ``block_counts[i-1]`` blocks, width
    ``num_groups * width_per_group * 2**(i-1)``, output
    ``res2_out_channels * 2**(i-1)`` channels (``stage_out_channels``), and
    stride 2 in its first block except for i = 1.

    Args:
        block: :class:`Bottleneck` or :class:`BasicBlock`.
        norm_layer / stem_norm_layer: callable(C) -> norm module.
        stage_with_dcn: 4 bools; DCN stages get ``conv2 = DFConv2d(**dcn)``.
        freeze_at: the stem (0) and ``layer1..layer{freeze_at-1}`` get
            ``requires_grad=False``; 0 freezes nothing.
    """

    def __init__(
        self, block_counts, block=Bottleneck, norm_layer=FrozenBatchNorm2d, stem_norm_layer=None, num_groups=1,
        width_per_group=64, stem_out_channels=64, res2_out_channels=256, stride_in_1x1=True,
        stage_with_dcn=(False, False, False, False), dcn=None, freeze_at=2,
    ):
        super().__init__()
        if len(block_counts) != 4 or len(stage_with_dcn) != 4:
            raise ValueError(
                f"expected 4 stages, got block_counts {tuple(block_counts)} and stage_with_dcn {tuple(stage_with_dcn)}"
            )
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT must be in 0..5, got {freeze_at}")
        self.stem = Stem(stem_out_channels, stem_norm_layer or norm_layer)
        in_channels = stem_out_channels
        stage_out_channels = []
        for i, (count, with_dcn) in enumerate(zip(block_counts, stage_with_dcn)):
            out_channels = res2_out_channels * 2**i
            blocks = []
            for b in range(count):
                blocks.append(
                    block(
                        in_channels, num_groups * width_per_group * 2**i, out_channels,
                        stride=2 if (b == 0 and i > 0) else 1, num_groups=num_groups, stride_in_1x1=stride_in_1x1,
                        norm_layer=norm_layer, dcn=dict(dcn or {}) if with_dcn else None,
                    )
                )
                in_channels = out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            stage_out_channels.append(out_channels)
        self.stage_out_channels = tuple(stage_out_channels)
        self._freeze(freeze_at)

    def _freeze(self, freeze_at):
        stages = [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]
        for module in stages[:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outputs.append(x)
        return outputs


# MODEL.RESNETS.TRANS_FUNC -> (block, norm kind); STEM_FUNC -> norm kind.
_TRANS_FUNCS = {
    "BottleneckWithFixedBatchNorm": (Bottleneck, "FrozenBN"),
    "BottleneckWithGN": (Bottleneck, "GN"),
    "BasicBlockWithFixedBatchNorm": (BasicBlock, "FrozenBN"),
    "BasicBlockWithGN": (BasicBlock, "GN"),
}
_STEM_FUNCS = {"StemWithFixedBatchNorm": "FrozenBN", "StemWithGN": "GN"}


def _lookup(table, key, value):
    if value not in table:
        raise KeyError(f"{key} = {value!r} is not one of: {', '.join(sorted(table))}")
    return table[value]


def _norm_layer(kind, cfg):
    r = cfg.MODEL.RESNETS
    if kind == "FrozenBN":
        return partial(FrozenBatchNorm2d, eps=r.BN_EPS, trainable_affine=r.BN_AFFINE_TRAINABLE)
    return partial(group_norm, **group_norm_kwargs(cfg))


def build_resnet(cfg, block_counts):
    """ResNet from ``MODEL.RESNETS`` / ``MODEL.BACKBONE`` with the given blocks per stage."""
    r = cfg.MODEL.RESNETS
    block, block_norm = _lookup(_TRANS_FUNCS, "MODEL.RESNETS.TRANS_FUNC", r.TRANS_FUNC)
    stem_norm = _lookup(_STEM_FUNCS, "MODEL.RESNETS.STEM_FUNC", r.STEM_FUNC)
    if block is BasicBlock and (r.NUM_GROUPS != 1 or r.RES2_OUT_CHANNELS != r.NUM_GROUPS * r.WIDTH_PER_GROUP):
        raise ValueError(
            f"{r.TRANS_FUNC} has no bottleneck: it needs MODEL.RESNETS.NUM_GROUPS = 1 and RES2_OUT_CHANNELS = "
            f"NUM_GROUPS * WIDTH_PER_GROUP (64 for ResNet-18/34), got NUM_GROUPS={r.NUM_GROUPS}, "
            f"WIDTH_PER_GROUP={r.WIDTH_PER_GROUP}, RES2_OUT_CHANNELS={r.RES2_OUT_CHANNELS}"
        )
    dcn = dict(
        with_modulated_dcn=r.WITH_MODULATED_DCN,
        deformable_groups=r.DEFORMABLE_GROUPS,
        zero_init_offset=r.DCN_ZERO_INIT_OFFSET,
    )
    return ResNet(
        block_counts,
        block=block,
        norm_layer=_norm_layer(block_norm, cfg),
        stem_norm_layer=_norm_layer(stem_norm, cfg),
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        stride_in_1x1=r.STRIDE_IN_1X1,
        stage_with_dcn=tuple(r.STAGE_WITH_DCN),
        dcn=dcn,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
    )
