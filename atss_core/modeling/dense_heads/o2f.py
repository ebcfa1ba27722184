"""O2F (Li et al., CVPR 2023, strongwolf/o2f): the parts wired from ``MODEL.O2F.*`` (o2f.md).

An FCOS-shaped point head whose 1-channel branch is an objectness, read through a
small conv tower of its own on the bbox tower output, and trained only through the
joint probability sigmoid(cls) x sigmoid(obj) in the classification loss. Per method:
that branch, the one-to-few assignment with its soft-label scale T decaying over
training (fed by the trainer's ``set_train_progress``), the soft focal + weighted GIoU
losses, and NMS-free inference on the joint score. The tower, point generator, coder,
flow and post-processing are shared.
"""
import functools
import logging
import math

from torch import Tensor, nn

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners.o2f import SCHEDULE_MODES, o2f_assign_points, soft_label_scale
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses.o2f import o2f_loss
from atss_core.modeling.utils import DensePredictions, joint_scores

from . import DENSE_HEADS
from .dense_head import DenseHead, TargetAssigner
from .postprocess import DensePostProcessor, as_is, cls_times_objectness
from .tower import Tower, _make_branch


def _objectness_tower(in_channels: int, channels: int, num_convs: int, use_gn: bool, bias: bool) -> nn.Sequential:
    """[conv3x3, GN(32), ReLU] x num_convs, in_channels -> channels -> ... -> channels."""
    if num_convs == 0:
        return nn.Sequential()
    first = [nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1, bias=bias)]
    first += [nn.GroupNorm(32, channels)] if use_gn else []
    return nn.Sequential(*first, nn.ReLU(), *_make_branch(channels, num_convs - 1, use_gn, False, bias))


class O2FTower(Tower):
    """The shared ``Tower`` plus O2F's objectness branch: ``centerness_tower`` on the bbox
    tower output, then ``centerness`` (obj_channels -> 1), an objectness logit.

    ``bbox_reg`` is relu(scale * raw) in strides, so that ``LTRBCoder(in_strides=True)``
    gives the original's pixel distances clamp(scale * raw, min=0) * stride
    (mmdet ``norm_on_bbox``). Every conv starts N(0, init_std) with bias 0, except the
    ``cls_logits`` bias, -log((1 - prior_prob) / prior_prob) (o2f §2.4).

    Args: as :class:`Tower`, plus obj_num_convs / obj_channels of the objectness
    branch, init_std, scale_init (initial per-level ``Scale``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        use_gn: bool = True,
        conv_bias: bool = True,
        obj_num_convs: int = 3,
        obj_channels: int = 64,
        prior_prob: float = 0.01,
        init_std: float = 0.01,
        scale_init: float = 1.0,
        num_scales: int = 5,
    ):
        if use_gn and obj_num_convs and obj_channels % 32:
            raise ValueError(f"MODEL.O2F.OBJ_CHANNELS must be a multiple of 32 for GroupNorm(32), got {obj_channels}")
        super().__init__(
            in_channels,
            num_classes,
            num_convs=num_convs,
            use_gn=use_gn,
            prior_prob=prior_prob,
            use_centerness=False,
            num_scales=num_scales,
            reg_activation="relu",
            conv_bias=conv_bias,
        )
        self.centerness_tower = _objectness_tower(in_channels, obj_channels, obj_num_convs, use_gn, conv_bias)
        self.centerness = nn.Conv2d(obj_channels if obj_num_convs else in_channels, 1, kernel_size=3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        for scale in self.scales:
            nn.init.constant_(scale.scale, scale_init)

    def centerness_features(self, cls_feat: Tensor, box_feat: Tensor) -> Tensor:
        return self.centerness_tower(box_feat)


class O2FDenseHead(DenseHead):
    """``DenseHead`` whose assignment's soft-label scale T follows training progress.

    The trainer calls :meth:`set_train_progress` before every step (spec C22). T is
    a plain float of the assigner, not a buffer: it stays out of checkpoints and is
    recomputed from the iteration on resume. Without progress (tests, evaluation)
    T is the schedule's start value.

    Args: the parts of :class:`DenseHead`, plus ``schedule(iters_done, max_iter) -> T``.
    """

    def __init__(self, *parts, schedule):
        super().__init__(*parts)
        self.schedule = schedule

    @property
    def soft_t(self) -> float:
        return self.assign.params["soft_t"]

    def set_train_progress(self, iters_done: int, max_iter: int):
        self.assign.params["soft_t"] = self.schedule(iters_done, max_iter)


def _prediction_inputs(box_coder: LTRBCoder, cells: Tensor, predictions: DensePredictions) -> dict:
    """One image's detached rows -> the joint probability (R, C) and decoded boxes (R, 4)."""
    return {
        "joint_prob": joint_scores(predictions),
        "pred_boxes": box_coder.decode(predictions.bbox_reg, cells),
    }


def _check_config(c, in_channels: int):
    if c.SCHEDULE_MODE not in SCHEDULE_MODES:
        raise ValueError(f"MODEL.O2F.SCHEDULE_MODE must be one of {SCHEDULE_MODES}, got {c.SCHEDULE_MODE!r}")
    if c.SCHEDULE_EPOCHS < 1 or c.ITERS_PER_EPOCH < 0:
        raise ValueError(
            f"MODEL.O2F.SCHEDULE_EPOCHS must be >= 1 and MODEL.O2F.ITERS_PER_EPOCH >= 0 (0 = SOLVER.MAX_ITER / "
            f"SCHEDULE_EPOCHS), got {c.SCHEDULE_EPOCHS} and {c.ITERS_PER_EPOCH}"
        )
    if c.TOPK < 1:
        raise ValueError(f"MODEL.O2F.TOPK must be >= 1, got {c.TOPK}")
    if not 0.0 <= c.POTO_ALPHA <= 1.0:
        raise ValueError(f"MODEL.O2F.POTO_ALPHA must be in [0, 1], got {c.POTO_ALPHA}")
    if c.CENTER_SAMPLING_RADIUS < 0:
        raise ValueError(
            f"MODEL.O2F.CENTER_SAMPLING_RADIUS must be >= 0 (0 = the whole gt), got {c.CENTER_SAMPLING_RADIUS}"
        )
    if c.CHANNELS != in_channels:
        # The shared tower is as wide as the FPN; CHANNELS only records the original's feat_channels.
        logging.getLogger(__name__).warning(
            "MODEL.O2F.CHANNELS = %d differs from the FPN width %d; the O2F towers use %d channels",
            c.CHANNELS, in_channels, in_channels,
        )


@DENSE_HEADS.register("O2F_ON")
def build_o2f(cfg, in_channels: int) -> O2FDenseHead:
    c = cfg.MODEL.O2F
    _check_config(c, in_channels)
    head = O2FTower(
        in_channels,
        num_classes=c.NUM_CLASSES - 1,
        num_convs=c.NUM_CONVS,
        use_gn=c.USE_GN,
        conv_bias=c.CONV_BIAS,
        obj_num_convs=c.OBJ_NUM_CONVS,
        obj_channels=c.OBJ_CHANNELS,
        prior_prob=c.PRIOR_PROB,
        init_std=c.INIT_STD,
        scale_init=c.SCALE_INIT,
        num_scales=len(c.FPN_STRIDES),
    )
    box_coder = LTRBCoder(in_strides=True)
    assign = TargetAssigner(
        o2f_assign_points,
        prediction_inputs=functools.partial(_prediction_inputs, box_coder),
        topk=c.TOPK,
        soft_t=c.SOFT_T_START,
        alpha=c.POTO_ALPHA,
        center_sampling_radius=c.CENTER_SAMPLING_RADIUS,
        main_weight=c.MAIN_WEIGHT,
        soft_weight=c.SOFT_WEIGHT,
    )
    loss = functools.partial(
        o2f_loss,
        box_coder=box_coder,
        neg_weight=c.NEG_WEIGHT,
        gamma=c.NEG_GAMMA,
        cls_loss_weight=c.CLS_LOSS_WEIGHT,
        reg_loss_weight=c.REG_LOSS_WEIGHT,
        eps=c.IOU_LOSS_EPS,
    )
    # The threshold applies to the joint score, which is also what is reported. apply_nms
    # stays True: O2F has no TTA (spec C26), its detections are always final.
    postprocessor = DensePostProcessor.from_config(
        cfg, c, box_coder, rank_score=cls_times_objectness, output_score=as_is, threshold_rank=True
    )
    if not c.USE_NMS:
        postprocessor.nms_thresh = None  # NMS-free: sort by score, keep the best
    schedule = functools.partial(
        soft_label_scale,
        t_start=c.SOFT_T_START,
        t_end=c.SOFT_T_END,
        epochs=c.SCHEDULE_EPOCHS,
        mode=c.SCHEDULE_MODE,
        iters_per_epoch=c.ITERS_PER_EPOCH,
    )
    points = PointGenerator(c.FPN_STRIDES, offset=c.POINT_OFFSET)
    return O2FDenseHead(head, points, assign, loss, postprocessor, schedule=schedule)
