"""RetinaNet (Lin et al., ICCV 2017) as shipped by sfzhang15/ATSS: the parts wired from
``MODEL.RETINANET.*`` (atss_heads §9.2).

Per method: 9 anchors per location, max-IoU matching (0.5 / 0.4 with the
low-quality rescue), focal + smooth-L1 losses normalised per rank, and the
class probability alone as the score. The tower has no GroupNorm, no Scales
and no centerness (keys ``cls_tower.{0,2,4,6}``). Its per-class NMS is the
shared class-aware NMS: a box is only ever suppressed by boxes of its class.
"""
import functools

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.anchors import make_anchor_generator_retinanet
from atss_core.modeling.assigners import max_iou_assign
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import retinanet_loss

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, as_is, cls_prob_only
from .tower import Tower


@DENSE_HEADS.register("RETINANET_ON")
def build_retinanet(cfg, in_channels: int) -> DenseHead:
    c = cfg.MODEL.RETINANET
    num_anchors = len(c.ASPECT_RATIOS) * c.SCALES_PER_OCTAVE
    head = Tower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        num_anchors=num_anchors,
        num_convs=c.NUM_CONVS,
        use_gn=False,
        prior_prob=c.PRIOR_PROB,
        use_centerness=False,
        num_scales=0,
    )
    # maskrcnn-benchmark's coder with weights (10, 10, 5, 5): the same maths as ATSS's BOX coder.
    box_coder = BoxCoder("BOX")
    assign = TargetAssigner(max_iou_assign, fg_iou_thresh=c.FG_IOU_THRESHOLD, bg_iou_thresh=c.BG_IOU_THRESHOLD)
    loss = functools.partial(
        retinanet_loss,
        box_coder=box_coder,
        focal_loss=SigmoidFocalLoss(c.LOSS_GAMMA, c.LOSS_ALPHA),
        smooth_l1_beta=c.BBOX_REG_BETA,
        reg_norm=c.BBOX_REG_WEIGHT,
    )
    postprocessor = DensePostProcessor.from_config(cfg, c, box_coder, rank_score=cls_prob_only, output_score=as_is)
    return DenseHead(head, make_anchor_generator_retinanet(cfg), assign, loss, postprocessor, num_anchors)
