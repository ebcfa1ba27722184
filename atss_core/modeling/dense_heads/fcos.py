"""FCOS (Tian et al., ICCV 2019) as shipped by sfzhang15/ATSS: the parts wired from
``MODEL.FCOS.*`` (atss_heads §9.1).

Per method: one location per cell instead of anchors, the size-range and
centre-sampling assignment, and an IoU loss on (l, t, r, b). The tower, the
ATSS loss flow (focal, centerness-weighted box loss, centerness BCE) and the
post-processing (cls x centerness, reported as its square root) are shared.
The original flattens level-major; the sums and per-image results do not
depend on the order.
"""
import functools

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners import FCOS_SIZE_RANGES, fcos_assign
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses import atss_loss, fcos_box_loss
from atss_core.modeling.losses.fcos import IOU_LOSS_TYPES

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, cls_times_centerness
from .tower import Tower


@DENSE_HEADS.register("FCOS_ON")
def build_fcos(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.FCOS
    if len(c.FPN_STRIDES) != len(FCOS_SIZE_RANGES):
        raise ValueError(
            f"MODEL.FCOS.FPN_STRIDES must list {len(FCOS_SIZE_RANGES)} levels (P3-P7), got {tuple(c.FPN_STRIDES)}"
        )
    if c.IOU_LOSS_TYPE not in IOU_LOSS_TYPES:
        raise ValueError(f"MODEL.FCOS.IOU_LOSS_TYPE must be one of {IOU_LOSS_TYPES}, got {c.IOU_LOSS_TYPE!r}")
    head = Tower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        num_convs=c.NUM_CONVS,
        use_dcn=c.USE_DCN_IN_TOWER,
        prior_prob=c.PRIOR_PROB,
        centerness_on_reg=c.CENTERNESS_ON_REG,
        # Distances in strides are learnt through a ReLU; in pixels through exp.
        reg_activation="relu" if c.NORM_REG_TARGETS else "exp",
    )
    box_coder = LTRBCoder(in_strides=c.NORM_REG_TARGETS)
    assign = TargetAssigner(
        fcos_assign, size_ranges=FCOS_SIZE_RANGES, center_sampling_radius=c.CENTER_SAMPLING_RADIUS
    )
    loss = functools.partial(
        atss_loss,
        box_coder=box_coder,
        focal_loss=SigmoidFocalLoss(c.LOSS_GAMMA, c.LOSS_ALPHA),
        reg_loss_weight=1.0,
        box_loss=functools.partial(fcos_box_loss, loss_type=c.IOU_LOSS_TYPE),
    )
    postprocessor = DensePostProcessor.from_config(
        cfg,
        c,
        box_coder,
        rank_score=cls_times_centerness,
        # The original FCOS skips NMS whenever TTA is on, vote or not.
        apply_nms=not cfg.TEST.BBOX_AUG.ENABLED,
    )
    return DenseHead(head, PointGenerator(c.FPN_STRIDES), assign, loss, postprocessor)
