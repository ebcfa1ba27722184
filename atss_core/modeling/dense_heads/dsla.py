"""DSLA (Su et al., Pattern Recognition 2022, YonghaoHe/DSLA): the parts wired from
``MODEL.DSLA.*`` (dsla.md).

An FCOS-like point head with no centerness branch. Per method: points with
no half-stride offset, the smooth-label assignment, the IoU-coupled QFL and
smooth-label-weighted IoU loss, and inference that keeps the top-k locations
per level before thresholding and reports the class probability itself.
The tower, point generator, coder, flow and post-processing are shared.
"""
import functools

from atss_core.config import resolve_box_offset
from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners import dsla_assign
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses import dsla_loss
from atss_core.modeling.losses.dsla import BOX_LOSS_TYPES

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, as_is, cls_prob_only
from .tower import Tower


def _check_config(c):
    if len(c.FPN_STRIDES) != len(c.REGRESS_RANGES):
        raise ValueError(
            f"MODEL.DSLA.FPN_STRIDES {tuple(c.FPN_STRIDES)} and MODEL.DSLA.REGRESS_RANGES "
            f"{[tuple(r) for r in c.REGRESS_RANGES]} must have one entry per FPN level"
        )
    if any(len(r) != 2 or r[0] > r[1] for r in c.REGRESS_RANGES):
        raise ValueError(f"MODEL.DSLA.REGRESS_RANGES must be [lo, hi] pairs with lo <= hi, got {c.REGRESS_RANGES}")
    if c.IOU_LOSS_TYPE not in BOX_LOSS_TYPES:
        raise ValueError(f"MODEL.DSLA.IOU_LOSS_TYPE must be one of {BOX_LOSS_TYPES}, got {c.IOU_LOSS_TYPE!r}")
    if c.INTERVAL_RELAXATION and not 0.0 <= c.INTERVAL_RELAXATION_FACTOR < 1.0:
        raise ValueError(f"MODEL.DSLA.INTERVAL_RELAXATION_FACTOR must be in [0, 1), got {c.INTERVAL_RELAXATION_FACTOR}")


@DENSE_HEADS.register("DSLA_ON")
def build_dsla(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.DSLA
    _check_config(c)
    head = Tower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        num_convs=c.NUM_CONVS,
        use_gn=c.USE_GN,
        use_dcn=c.USE_DCN_IN_TOWER,
        prior_prob=c.PRIOR_PROB,
        use_centerness=False,
        num_scales=len(c.FPN_STRIDES),
        # Distances in strides are learnt through a ReLU, in pixels through exp (mmdet norm_on_bbox).
        reg_activation="relu" if c.NORM_REG_TARGETS else "exp",
        conv_bias=c.CONV_BIAS,
        zero_init_offset=True,
    )
    box_coder = LTRBCoder(in_strides=c.NORM_REG_TARGETS)
    assign = TargetAssigner(
        dsla_assign,
        regress_ranges=[tuple(r) for r in c.REGRESS_RANGES],
        relaxation_factor=c.INTERVAL_RELAXATION_FACTOR if c.INTERVAL_RELAXATION else 0.0,
        core_zone=c.CENTERNESS_CORE_ZONE,
        center_sampling_radius=c.CENTER_SAMPLING_RADIUS,
    )
    loss = functools.partial(
        dsla_loss,
        box_coder=box_coder,
        gamma=c.LOSS_GAMMA,
        cls_loss_weight=c.CLS_LOSS_WEIGHT,
        reg_loss_weight=c.REG_LOSS_WEIGHT,
        loss_type=c.IOU_LOSS_TYPE,
        eps=c.IOU_LOSS_EPS,
        iou_coupling=c.IOU_SCORE_COUPLING,
        iou_only=c.IOU_SCORE_ONLY,
    )
    postprocessor = DensePostProcessor(
        box_coder,
        rank_score=cls_prob_only,
        output_score=as_is,
        pre_nms_thresh=c.INFERENCE_TH,
        pre_nms_top_n=c.PRE_NMS_TOP_N,
        nms_thresh=c.NMS_TH,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMG,
        # No TTA for DSLA (spec C26): always final detections.
        apply_nms=True,
        box_offset=resolve_box_offset(cfg),
        rank_locations=True,
    )
    return DenseHead(head, PointGenerator(c.FPN_STRIDES, offset=c.POINT_OFFSET), assign, loss, postprocessor)
