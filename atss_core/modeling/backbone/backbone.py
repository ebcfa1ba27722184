"""Backbone registry: ``MODEL.BACKBONE.CONV_BODY`` -> ResNet body + FPN (P3..P7)."""
import logging
from collections import OrderedDict

from torch import nn

from atss_core.modeling.make_layers import conv_with_kaiming_uniform, group_norm_kwargs
from atss_core.utils.registry import Registry

from .fpn import FPN, LastLevelP6P7
from .resnet import build_resnet

BACKBONES = Registry("backbone")

logger = logging.getLogger(__name__)


class Backbone(nn.Sequential):
    """``body`` then ``fpn``: [N,3,H,W] -> tuple of ``out_channels``-wide maps (P3..P7)."""

    def __init__(self, body, fpn, out_channels):
        super().__init__(OrderedDict([("body", body), ("fpn", fpn)]))
        self.out_channels = out_channels


def build_resnet_fpn_p3p7_backbone(cfg, block_counts):
    """ResNet body + FPN on C3..C5 + P6/P7 (framework §3.2).

    P6 reads C5 if ``MODEL.RETINANET.USE_C5`` else P5 (spec C9); the FPN
    widths come from the body's actual stage widths.
    """
    body = build_resnet(cfg, block_counts)
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    c5_channels = body.stage_out_channels[-1]
    in_channels_p6 = c5_channels if cfg.MODEL.RETINANET.USE_C5 else out_channels
    if cfg.MODEL.RETINANET.USE_C5 and c5_channels == out_channels:
        logger.warning(
            "MODEL.RETINANET.USE_C5 is True but C5 and the FPN both have %d channels: P6 is computed from P5, "
            "as in the original (LastLevelP6P7 decides by channel count)",
            out_channels,
        )
    conv_block = conv_with_kaiming_uniform(cfg.MODEL.FPN.USE_GN, cfg.MODEL.FPN.USE_RELU, group_norm_kwargs(cfg))
    fpn = FPN(
        in_channels_list=[0, *body.stage_out_channels[1:]],
        out_channels=out_channels,
        conv_block=conv_block,
        top_blocks=LastLevelP6P7(in_channels_p6, out_channels),
    )
    return Backbone(body, fpn, out_channels)


def _register_resnet_fpn(name, block_counts):
    BACKBONES.register(name)(lambda cfg: build_resnet_fpn_p3p7_backbone(cfg, block_counts))


# Blocks per stage res2..res5. R-18/34 need a BasicBlock TRANS_FUNC and
# RES2_OUT_CHANNELS 64; X-101 is R-101 with NUM_GROUPS / WIDTH_PER_GROUP.
_register_resnet_fpn("R-18-FPN-RETINANET", (2, 2, 2, 2))
_register_resnet_fpn("R-34-FPN-RETINANET", (3, 4, 6, 3))
_register_resnet_fpn("R-50-FPN-RETINANET", (3, 4, 6, 3))
_register_resnet_fpn("R-101-FPN-RETINANET", (3, 4, 23, 3))


def build_backbone(cfg):
    """The registered backbone named by ``MODEL.BACKBONE.CONV_BODY``."""
    name = cfg.MODEL.BACKBONE.CONV_BODY
    if name not in BACKBONES:
        raise KeyError(
            f"MODEL.BACKBONE.CONV_BODY = {name!r} is not a registered backbone; "
            f"registered: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[name](cfg)
