"""DW (Dual Weighting, Li et al., CVPR 2022, strongwolf/DW): the parts wired from
``MODEL.DW.*`` (dw.md).

An FCOS-like point head whose 1-channel branch (``centerness``, on the bbox
tower) is an objectness with no target of its own: it enters the joint score
s = cls x objectness of both classification terms and of inference. Per
method: distances in pixels (stride x ReLU(scale x raw)), an optional box
refinement by deformable sampling, the soft assignment and losses, and
inference thresholding the joint score. Tower, points, coder, flow and
post-processing are shared.
"""
import functools
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atss_core.layers import DFConv2d, deform_conv
from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners.dw import dw_assign
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses.dw import dw_loss
from atss_core.modeling.utils import joint_scores

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, as_is, cls_times_objectness
from .tower import Tower


def _at_least_float32(t: Tensor) -> Tensor:
    """Boxes are computed in float32 under autocast (spec C18); float64 stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def refine_distances(distances: Tensor, offsets: Tensor, stride: float, point_offset: float = 0.5) -> Tensor:
    """DW box refinement of one level (dw.md §2.4): each side of a cell's box is read, by
    bilinear sampling with zeros outside the map, from the box predicted at the cell on
    that side of it, shifted by a learnt residual.

    Args:
        distances (N, 4, H, W): l, t, r, b in pixels.
        offsets (N, 8, H, W): (row, column) shifts in cells for x1, y1, x2, y2.
        stride: of the level; point_offset: points at (k + offset) * stride.
    Returns:
        refined distances (N, 4, H, W) >= 0, in float32 (float64 stays float64).
    """
    with torch.autocast(device_type=distances.device.type, enabled=False):
        d = _at_least_float32(distances)
        o = offsets.to(d.dtype)
        h, w = d.shape[-2:]
        px = ((torch.arange(w, dtype=d.dtype, device=d.device) + point_offset) * stride).view(1, 1, w)
        py = ((torch.arange(h, dtype=d.dtype, device=d.device) + point_offset) * stride).view(1, h, 1)
        l, t, r, b = d.unbind(1)
        corners = torch.stack((px - l, py - t, px + r, py + b), dim=1)
        zero = torch.zeros_like(l)
        # Offset channels (2g, 2g + 1) = (row, column) of coordinate g: x1 is read l/s cells
        # to the left, y1 t/s above, x2 r/s to the right, y2 b/s below (not detached).
        toward_side = torch.stack((zero, -l, -t, zero, zero, r, b, zero), dim=1) / stride
        ones = corners.new_ones(4, 1, 1, 1)
        x1, y1, x2, y2 = deform_conv(corners, o + toward_side, ones, groups=4, deformable_groups=4).unbind(1)
        return F.relu(torch.stack((px - x1, py - y1, x2 - px, y2 - py), dim=1))


class DWTower(Tower):
    """The shared tower with DW's outputs: objectness on the bbox tower, distances in
    pixels, and (``refine``) the ``reg_offset`` conv and :func:`refine_distances`.

    Args (beyond :class:`Tower`'s): strides, point_offset of the levels;
        init_std: std of every conv weight but the DCN offset convs (zero);
        reg_bias_init: ``bbox_pred`` bias (4.0: distances start near 4 strides).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        point_offset: float = 0.5,
        num_convs: int = 4,
        use_gn: bool = True,
        use_dcn: bool = False,
        conv_bias: bool = True,
        init_std: float = 0.01,
        prior_prob: float = 0.02,
        reg_bias_init: float = 4.0,
        refine: bool = True,
    ):
        super().__init__(
            in_channels,
            num_classes,
            num_convs=num_convs,
            use_gn=use_gn,
            use_dcn=use_dcn,
            prior_prob=prior_prob,
            centerness_on_reg=True,
            num_scales=len(strides),
            reg_activation="relu",
            bbox_bias_init=reg_bias_init,
            conv_bias=conv_bias,
            zero_init_offset=True,
        )
        self.strides = tuple(int(s) for s in strides)
        self.point_offset = float(point_offset)
        self.reg_offset = nn.Conv2d(in_channels, 8, kernel_size=3, stride=1, padding=1) if refine else None
        if self.reg_offset is not None:
            nn.init.zeros_(self.reg_offset.bias)
        offset_convs = {id(m.offset) for m in self.modules() if isinstance(m, DFConv2d)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in offset_convs:
                nn.init.normal_(m.weight, std=init_std)

    def forward(self, features: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: L maps (N, in_channels, H_l, W_l).
        Returns:
            cls logits L x (N, C, H_l, W_l), distances L x (N, 4, H_l, W_l) (l, t, r, b in
            pixels, refined if ``refine``, float32), objectness logits L x (N, 1, H_l, W_l).
        """
        if len(features) != len(self.strides):
            raise ValueError(
                f"got {len(features)} feature levels for {len(self.strides)} strides (MODEL.DW.FPN_STRIDES)"
            )
        logits, distances, objectness = [], [], []
        for level, (x, stride) in enumerate(zip(features, self.strides)):
            box_feat = self.bbox_tower(x)
            logits.append(self.cls_logits(self.cls_tower(x)))
            objectness.append(self.centerness(box_feat))
            # Out of place: the original's in-place "*= stride" on the ReLU output breaks
            # backward in current PyTorch (ReLU's backward reads its output).
            d = F.relu(_at_least_float32(self.scales[level](self.bbox_pred(box_feat)))) * stride
            if self.reg_offset is not None:
                d = refine_distances(d, self.reg_offset(box_feat), stride, self.point_offset)
            distances.append(d)
        return logits, distances, objectness


def _prediction_inputs(box_coder: LTRBCoder, cells: Tensor, predictions) -> dict:
    """One image's detached rows -> the ``dw_assign`` inputs: decoded boxes and joint scores."""
    return {"pred_boxes": box_coder.decode(predictions.bbox_reg, cells), "scores": joint_scores(predictions)}


@DENSE_HEADS.register("DW_ON")
def build_dw(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.DW
    if c.NEG_IOU_THRESH <= 0 or c.NEG_IOU_THRESH >= 1:
        raise ValueError(f"MODEL.DW.NEG_IOU_THRESH must be in (0, 1), got {c.NEG_IOU_THRESH}")
    if c.PRIOR_SIGMA <= 0:
        raise ValueError(f"MODEL.DW.PRIOR_SIGMA must be > 0, got {c.PRIOR_SIGMA}")
    head = DWTower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        strides=c.FPN_STRIDES,
        point_offset=c.POINT_OFFSET,
        num_convs=c.NUM_CONVS,
        use_gn=c.USE_GN,
        use_dcn=c.USE_DCN_IN_TOWER,
        conv_bias=c.CONV_BIAS,
        init_std=c.INIT_STD,
        prior_prob=c.PRIOR_PROB,
        reg_bias_init=c.REG_BIAS_INIT,
        refine=c.REG_REFINE,
    )
    box_coder = LTRBCoder(in_strides=False)
    assign = TargetAssigner(
        dw_assign,
        functools.partial(_prediction_inputs, box_coder),
        prior_mean=c.PRIOR_MEAN,
        prior_sigma=c.PRIOR_SIGMA,
        soft_prior=c.SOFT_PRIOR,
        hard_prior_thresh=c.HARD_PRIOR_THRESH,
        giou_loss_weight=c.GIOU_LOSS_WEIGHT,
        reg_score_exp=c.REG_SCORE_EXP,
        pos_exp_num=c.POS_EXP_NUM,
        pos_exp_den=c.POS_EXP_DEN,
        neg_iou_thresh=c.NEG_IOU_THRESH,
        neg_alpha=c.NEG_ALPHA,
        eps=c.EPS,
    )
    loss = functools.partial(
        dw_loss,
        box_coder=box_coder,
        giou_loss_weight=c.GIOU_LOSS_WEIGHT,
        reg_score_exp=c.REG_SCORE_EXP,
        neg_gamma=c.NEG_GAMMA,
        pos_cls_weight=c.POS_CLS_WEIGHT,
        loc_weight=c.LOC_WEIGHT,
        neg_cls_weight=c.NEG_CLS_WEIGHT,
    )
    postprocessor = DensePostProcessor.from_config(
        cfg,
        c,
        box_coder,
        rank_score=cls_times_objectness,
        output_score=as_is,
        # No TTA for DW (spec C26): always final detections.
        apply_nms=True,
        rank_locations=False,
        threshold_rank=True,
    )
    return DenseHead(head, PointGenerator(c.FPN_STRIDES, offset=c.POINT_OFFSET), assign, loss, postprocessor)
