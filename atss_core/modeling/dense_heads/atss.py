"""ATSS (Zhang et al., CVPR 2020): the parts wired from ``MODEL.ATSS.*``.

The only per-method pieces are the assignment rule (POSITIVE_TYPE), the loss
and the ranking score (cls x centerness, reported as its square root); the
tower, anchors, coder, flow and post-processing are shared.
"""
import functools

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.anchors import make_anchor_generator_atss
from atss_core.modeling.assigners import POSITIVE_TYPES
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import atss_loss

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, cls_times_centerness
from .tower import Tower


def make_atss_assigner(cfg) -> TargetAssigner:
    """``MODEL.ATSS.POSITIVE_TYPE`` and the parameters its rule reads."""
    c = cfg.MODEL.ATSS
    num_anchors = len(c.ASPECT_RATIOS) * c.SCALES_PER_OCTAVE
    params = {
        "ATSS": dict(topk=c.TOPK, num_anchors_per_loc=num_anchors),
        "SSC": dict(),
        "IoU": dict(fg_iou_thresh=c.FG_IOU_THRESHOLD, bg_iou_thresh=c.BG_IOU_THRESHOLD),
        "TOPK": dict(topk=c.TOPK),
    }
    if c.POSITIVE_TYPE not in POSITIVE_TYPES:
        raise ValueError(f"MODEL.ATSS.POSITIVE_TYPE must be one of {sorted(POSITIVE_TYPES)}, got {c.POSITIVE_TYPE!r}")
    return TargetAssigner(POSITIVE_TYPES[c.POSITIVE_TYPE], **params[c.POSITIVE_TYPE])


@DENSE_HEADS.register("ATSS_ON")
def build_atss(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.ATSS
    num_anchors = len(c.ASPECT_RATIOS) * c.SCALES_PER_OCTAVE
    point = c.REGRESSION_TYPE == "POINT"
    if point and num_anchors != 1:
        raise ValueError(
            f"MODEL.ATSS.REGRESSION_TYPE 'POINT' needs one anchor per location, got "
            f"{len(c.ASPECT_RATIOS)} ASPECT_RATIOS x {c.SCALES_PER_OCTAVE} SCALES_PER_OCTAVE"
        )
    head = Tower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        num_anchors=num_anchors,
        num_convs=c.NUM_CONVS,
        use_dcn=c.USE_DCN_IN_TOWER,
        prior_prob=c.PRIOR_PROB,
        reg_activation="relu" if point else "none",
        bbox_bias_init=4.0 if point else 0.0,
    )
    box_coder = BoxCoder(c.REGRESSION_TYPE, point_scale=c.ANCHOR_SIZES[0] / c.ANCHOR_STRIDES[0])
    loss = functools.partial(
        atss_loss,
        box_coder=box_coder,
        focal_loss=SigmoidFocalLoss(c.LOSS_GAMMA, c.LOSS_ALPHA),
        reg_loss_weight=c.REG_LOSS_WEIGHT,
    )
    aug = cfg.TEST.BBOX_AUG
    postprocessor = DensePostProcessor.from_config(
        cfg,
        c,
        box_coder,
        rank_score=cls_times_centerness,
        # Plain TTA merges all passes before its own NMS; the vote path wants final detections.
        apply_nms=not (aug.ENABLED and not aug.VOTE),
    )
    return DenseHead(head, make_anchor_generator_atss(cfg), make_atss_assigner(cfg), loss, postprocessor, num_anchors)
