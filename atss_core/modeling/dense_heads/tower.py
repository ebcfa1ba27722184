"""The conv tower shared by the ATSS, Dynamic ATSS, FCOS and RetinaNet heads.

Attribute names (``cls_tower``, ``bbox_tower``, ``cls_logits``, ``bbox_pred``,
``centerness``, ``scales``) and the Sequential indices are those of
sfzhang15/ATSS, so ``rpn.head.*`` checkpoint keys load unchanged.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from atss_core.layers import DFConv2d, Scale

_REG_ACTIVATIONS = {"none": lambda t: t, "relu": torch.relu, "exp": torch.exp}


def _make_branch(channels: int, num_convs: int, use_gn: bool, use_dcn: bool, bias: bool = True) -> nn.Sequential:
    """[conv3x3 (+ bias) (+ GN(32)) + ReLU] x num_convs; with use_dcn the last conv is a DCNv2."""
    layers = []
    for i in range(num_convs):
        if use_dcn and i == num_convs - 1:
            conv = DFConv2d(channels, channels, with_modulated_dcn=True, kernel_size=3, stride=1, bias=bias)
        else:
            conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=bias)
        layers.append(conv)
        if use_gn:
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Tower(nn.Module):
    """Two conv towers and the prediction convs, shared over FPN levels.

    Args:
        in_channels: FPN channels (tower width).
        num_classes: sigmoid classes C (background excluded).
        num_anchors: anchors per location A.
        num_convs: convs per tower.
        use_gn: GroupNorm(32, in_channels) after each tower conv.
        use_dcn: the last conv of each tower is a modulated deformable conv.
        prior_prob: initial foreground probability of ``cls_logits``.
        use_centerness: build the 1-channel-per-anchor ``centerness`` conv.
        centerness_on_reg: centerness reads the bbox tower (ATSS) or the cls
            tower (FCOS default).
        num_scales: learnable per-level ``Scale`` on the box output (5 in
            ATSS/FCOS; 0 = no ``scales`` attribute, as RetinaNet).
        reg_activation: applied after the scale: "none", "relu" (ATSS POINT),
            "exp" (FCOS).
        bbox_bias_init: initial ``bbox_pred`` bias (4.0 for ATSS POINT).
        conv_bias: tower convs have a bias (False: mmdet's ``conv_bias='auto'``
            before GN, DSLA R-50).
        zero_init_offset: DCN offset convs of the towers start at zero (mmdet
            heads, spec C12) instead of N(0, 0.01).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int = 1,
        num_convs: int = 4,
        use_gn: bool = True,
        use_dcn: bool = False,
        prior_prob: float = 0.01,
        use_centerness: bool = True,
        centerness_on_reg: bool = True,
        num_scales: int = 5,
        reg_activation: str = "none",
        bbox_bias_init: float = 0.0,
        conv_bias: bool = True,
        zero_init_offset: bool = False,
    ):
        super().__init__()
        if use_gn and in_channels % 32:
            raise ValueError(f"tower GroupNorm(32, C) needs in_channels divisible by 32, got {in_channels}")
        if reg_activation not in _REG_ACTIVATIONS:
            raise ValueError(f"reg_activation must be one of {sorted(_REG_ACTIVATIONS)}, got {reg_activation!r}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_anchors = num_anchors
        self.centerness_on_reg = centerness_on_reg
        self.reg_activation = reg_activation
        self.cls_tower = _make_branch(in_channels, num_convs, use_gn, use_dcn, conv_bias)
        self.bbox_tower = _make_branch(in_channels, num_convs, use_gn, use_dcn, conv_bias)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=3, stride=1, padding=1)
        self.centerness = (
            nn.Conv2d(in_channels, num_anchors, kernel_size=3, stride=1, padding=1) if use_centerness else None
        )
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_scales)]) if num_scales else None
        self._init_weights(prior_prob, bbox_bias_init, zero_init_offset)

    def _init_weights(self, prior_prob: float, bbox_bias_init: float, zero_init_offset: bool):
        # Every nn.Conv2d, including DFConv2d's offset conv, gets N(0, 0.01): the
        # original's init loop overwrote the offset conv's own init the same way;
        # the deformable conv itself is no nn.Conv2d and keeps its init (atss_heads §2.2).
        for branch in (self.cls_tower, self.bbox_tower, self.cls_logits, self.bbox_pred, self.centerness):
            if branch is None:
                continue
            for m in branch.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)
        if zero_init_offset:
            for m in self.modules():
                if isinstance(m, DFConv2d):
                    nn.init.zeros_(m.offset.weight)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(self.bbox_pred.bias, bbox_bias_init)

    def forward(self, features: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: L maps (N, in_channels, H_l, W_l).
        Returns:
            logits L x (N, A*C, H_l, W_l), bbox_reg L x (N, A*4, H_l, W_l),
            centerness L x (N, A, H_l, W_l) (empty list without that branch).
            Raw outputs: no sigmoid; ``reg_activation`` already applied.
        """
        if self.scales is not None and len(features) > len(self.scales):
            raise ValueError(f"got {len(features)} feature levels but the head has {len(self.scales)} scales")
        activation = _REG_ACTIVATIONS[self.reg_activation]
        logits, bbox_reg, centerness = [], [], []
        for level, x in enumerate(features):
            cls_feat = self.cls_tower(x)
            box_feat = self.bbox_tower(x)
            logits.append(self.cls_logits(cls_feat))
            reg = self.bbox_pred(box_feat)
            if self.scales is not None:
                reg = self.scales[level](reg)
            bbox_reg.append(activation(reg))
            if self.centerness is not None:
                centerness.append(self.centerness(self.centerness_features(cls_feat, box_feat)))
        return logits, bbox_reg, centerness

    def centerness_features(self, cls_feat: Tensor, box_feat: Tensor) -> Tensor:
        """What ``centerness`` reads: the bbox (``centerness_on_reg``) or cls tower output.

        Heads whose 1-channel branch has convs of its own (O2F) override this.
        """
        return box_feat if self.centerness_on_reg else cls_feat
