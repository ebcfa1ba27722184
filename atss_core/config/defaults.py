"""Default configuration of atss_core.

Every key of sfzhang15/ATSS ``atss_core/config/defaults.py`` is kept with its
default, so the original yaml files load unchanged. Keys marked "new" are
atss_core additions (see ../shared/spec/README.md section 3); their defaults
keep the original behaviour. Legacy R-CNN/FBNet groups live in ``legacy.py``.
"""
import os

from yacs.config import CfgNode as CN

from .legacy import add_legacy_keys

_C = CN()

# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Head selection: exactly one *_ON flag must be True (spec C1).
_C.MODEL.ATSS_ON = False
_C.MODEL.FCOS_ON = False
_C.MODEL.RETINANET_ON = False
_C.MODEL.DYNAMIC_ATSS_ON = False  # new
_C.MODEL.DSLA_ON = False  # new
_C.MODEL.DW_ON = False  # new
_C.MODEL.O2F_ON = False  # new
# Inert legacy flags: there are no ROI/mask/keypoint heads (spec C3).
_C.MODEL.RPN_ONLY = False
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.CLS_AGNOSTIC_BBOX_REG = False
# "cuda" or "cpu"; the tools fall back to "cpu" with a warning if CUDA is absent.
_C.MODEL.DEVICE = "cuda"
# Initial weights: local path, http(s) URL or catalog://name.
_C.MODEL.WEIGHT = ""
_C.MODEL.USE_SYNCBN = False
# new: +1 pixel convention of framework box ops; -1 = auto (1 for the ATSS
# family, 0 for the mmdet family), else 0 or 1 (spec C4).
_C.MODEL.BOX_OFFSET = -1

# --------------------------------------------------------------------------- #
# Input
# --------------------------------------------------------------------------- #
_C.INPUT = CN()
# Candidate shorter-side sizes for training; one is drawn per image.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
# Inclusive range of shorter-side sizes; (-1, -1) disables it.
_C.INPUT.MIN_SIZE_RANGE_TRAIN = (-1, -1)
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Per-channel mean/std, in the channel order and scale selected by TO_BGR255.
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
# True: BGR in 0-255 (Caffe2 weights); False: RGB in 0-1 (torchvision weights).
_C.INPUT.TO_BGR255 = True
# new (maskrcnn-benchmark's name): train-time horizontal flip probability.
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5

# --------------------------------------------------------------------------- #
# Datasets and loader
# --------------------------------------------------------------------------- #
_C.DATASETS = CN()
# Names from the paths catalog; training concatenates them.
_C.DATASETS.TRAIN = ()
# Names from the paths catalog; each is evaluated on its own.
_C.DATASETS.TEST = ()
# new: your own COCO-format data without a catalog entry: annotation json files,
# paired one to one with image folders; added after the DATASETS.TRAIN names.
_C.DATASETS.TRAIN_ANN_FILES = ()
_C.DATASETS.TRAIN_IMG_DIRS = ()
# new: the same for evaluation; results go to inference/<json file name>/.
_C.DATASETS.TEST_ANN_FILES = ()
_C.DATASETS.TEST_IMG_DIRS = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Pad batched images to a multiple of this (32 for FPN models).
_C.DATALOADER.SIZE_DIVISIBILITY = 0
# Batch landscape and portrait images separately.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

# --------------------------------------------------------------------------- #
# Backbone
# --------------------------------------------------------------------------- #
_C.MODEL.BACKBONE = CN()
# Registry name, e.g. "R-50-FPN-RETINANET"; "R-18/34-FPN-RETINANET" are new.
_C.MODEL.BACKBONE.CONV_BODY = "R-50-C4"
# Freeze the stem (stage 0) and stages 1..FREEZE_CONV_BODY_AT-1.
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2
# Unused, as in the original.
_C.MODEL.BACKBONE.USE_GN = False

_C.MODEL.FPN = CN()
_C.MODEL.FPN.USE_GN = False
_C.MODEL.FPN.USE_RELU = False

# GroupNorm of "*WithGN" backbones and FPN.USE_GN (not of the head towers).
_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
_C.MODEL.GROUP_NORM.EPSILON = 1e-5

_C.MODEL.RESNETS = CN()
# 1 = ResNet, > 1 = ResNeXt.
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride on the 1x1 conv (MSRA/caffe) instead of the 3x3 (pytorch/FB).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# Block and stem builders: "BottleneckWithFixedBatchNorm", "BottleneckWithGN",
# "BasicBlockWithFixedBatchNorm", "BasicBlockWithGN"; stems likewise.
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
# Unused (ROI heads only), kept so configs load.
_C.MODEL.RESNETS.RES5_DILATION = 1
# FPN output width.
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256 * 4
# Output width of res2 (doubles per stage); 64 for BasicBlock bodies.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable conv per stage res2..res5.
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
_C.MODEL.RESNETS.WITH_MODULATED_DCN = False
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1
# new: frozen BN statistics but trainable affine in unfrozen stages (spec C11).
_C.MODEL.RESNETS.BN_AFFINE_TRAINABLE = False
# new: eps of the backbone frozen BN (0 in the original).
_C.MODEL.RESNETS.BN_EPS = 0.0
# new: zero-initialise backbone DCN offset convs (spec C12).
_C.MODEL.RESNETS.DCN_ZERO_INIT_OFFSET = False

# --------------------------------------------------------------------------- #
# ATSS head (also read by Dynamic ATSS)
# --------------------------------------------------------------------------- #
_C.MODEL.ATSS = CN()
# Number of classes including background.
_C.MODEL.ATSS.NUM_CLASSES = 81
_C.MODEL.ATSS.ANCHOR_SIZES = (64, 128, 256, 512, 1024)
_C.MODEL.ATSS.ASPECT_RATIOS = (1.0,)
_C.MODEL.ATSS.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
# Computed but unused by ATSS, as in the original.
_C.MODEL.ATSS.STRADDLE_THRESH = 0
_C.MODEL.ATSS.OCTAVE = 2.0
_C.MODEL.ATSS.SCALES_PER_OCTAVE = 1
_C.MODEL.ATSS.NUM_CONVS = 4
_C.MODEL.ATSS.USE_DCN_IN_TOWER = False
_C.MODEL.ATSS.LOSS_ALPHA = 0.25
_C.MODEL.ATSS.LOSS_GAMMA = 2.0
# Positive selection: 'ATSS', 'SSC', 'IoU' or 'TOPK'.
_C.MODEL.ATSS.POSITIVE_TYPE = "ATSS"
_C.MODEL.ATSS.FG_IOU_THRESHOLD = 0.5
_C.MODEL.ATSS.BG_IOU_THRESHOLD = 0.4
# Candidates per level and per gt.
_C.MODEL.ATSS.TOPK = 9
# 'BOX' (deltas from the anchor box) or 'POINT' (distances from its centre).
_C.MODEL.ATSS.REGRESSION_TYPE = "BOX"
_C.MODEL.ATSS.REG_LOSS_WEIGHT = 2.0
_C.MODEL.ATSS.PRIOR_PROB = 0.01
_C.MODEL.ATSS.INFERENCE_TH = 0.05
_C.MODEL.ATSS.NMS_TH = 0.6
_C.MODEL.ATSS.PRE_NMS_TOP_N = 1000

# --------------------------------------------------------------------------- #
# FCOS head
# --------------------------------------------------------------------------- #
_C.MODEL.FCOS = CN()
_C.MODEL.FCOS.NUM_CLASSES = 81
_C.MODEL.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]
_C.MODEL.FCOS.PRIOR_PROB = 0.01
_C.MODEL.FCOS.INFERENCE_TH = 0.05
_C.MODEL.FCOS.NMS_TH = 0.6
_C.MODEL.FCOS.PRE_NMS_TOP_N = 1000
_C.MODEL.FCOS.LOSS_ALPHA = 0.25
_C.MODEL.FCOS.LOSS_GAMMA = 2.0
_C.MODEL.FCOS.NUM_CONVS = 4
# <= 0 disables centre sampling.
_C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 0.0
# "iou", "linear_iou" or "giou".
_C.MODEL.FCOS.IOU_LOSS_TYPE = "iou"
_C.MODEL.FCOS.NORM_REG_TARGETS = False
_C.MODEL.FCOS.CENTERNESS_ON_REG = False
_C.MODEL.FCOS.USE_DCN_IN_TOWER = False

# --------------------------------------------------------------------------- #
# RetinaNet head (USE_C5 also selects the P6 input of every FPN, spec C9)
# --------------------------------------------------------------------------- #
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 81
_C.MODEL.RETINANET.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.MODEL.RETINANET.ASPECT_RATIOS = (0.5, 1.0, 2.0)
_C.MODEL.RETINANET.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
_C.MODEL.RETINANET.STRADDLE_THRESH = 0
_C.MODEL.RETINANET.OCTAVE = 2.0
_C.MODEL.RETINANET.SCALES_PER_OCTAVE = 3
# P6 from C5 (True) or from P5 (False).
_C.MODEL.RETINANET.USE_C5 = True
_C.MODEL.RETINANET.NUM_CONVS = 4
_C.MODEL.RETINANET.BBOX_REG_WEIGHT = 4.0
_C.MODEL.RETINANET.BBOX_REG_BETA = 0.11
_C.MODEL.RETINANET.PRE_NMS_TOP_N = 1000
_C.MODEL.RETINANET.FG_IOU_THRESHOLD = 0.5
_C.MODEL.RETINANET.BG_IOU_THRESHOLD = 0.4
_C.MODEL.RETINANET.LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
_C.MODEL.RETINANET.INFERENCE_TH = 0.05
_C.MODEL.RETINANET.NMS_TH = 0.4

# --------------------------------------------------------------------------- #
# DSLA head (new; dsla.md 7.1 with spec/README.md 3.1 names; defaults = the
# logged R-50 run, the R-101 "tricks" run sets the bracketed values)
# --------------------------------------------------------------------------- #
_C.MODEL.DSLA = CN()
_C.MODEL.DSLA.NUM_CLASSES = 81
_C.MODEL.DSLA.NUM_CONVS = 4
_C.MODEL.DSLA.FPN_STRIDES = [8, 16, 32, 64, 128]
_C.MODEL.DSLA.PRIOR_PROB = 0.01
_C.MODEL.DSLA.USE_GN = True
# Tower conv bias [True].
_C.MODEL.DSLA.CONV_BIAS = False
# DCNv2 as the last conv of both towers [True].
_C.MODEL.DSLA.USE_DCN_IN_TOWER = False
# Points at (k + POINT_OFFSET) * stride (spec C6).
_C.MODEL.DSLA.POINT_OFFSET = 0.0
_C.MODEL.DSLA.REGRESS_RANGES = [[0, 64], [64, 128], [128, 256], [256, 512], [512, 100000000]]
# Smooth scale score over relaxed level intervals.
_C.MODEL.DSLA.INTERVAL_RELAXATION = True
_C.MODEL.DSLA.INTERVAL_RELAXATION_FACTOR = 0.2
# Soft-target options.
_C.MODEL.DSLA.CENTERNESS_CORE_ZONE = True
_C.MODEL.DSLA.IOU_SCORE_COUPLING = True
_C.MODEL.DSLA.IOU_SCORE_ONLY = False
# 0 = off [1.5].
_C.MODEL.DSLA.CENTER_SAMPLING_RADIUS = 0.0
# ReLU output times stride [True].
_C.MODEL.DSLA.NORM_REG_TARGETS = False
# Quality focal loss beta and weight [1.0].
_C.MODEL.DSLA.LOSS_GAMMA = 2.0
_C.MODEL.DSLA.CLS_LOSS_WEIGHT = 2.0
# "iou" (-ln IoU) or "giou" ["giou"].
_C.MODEL.DSLA.IOU_LOSS_TYPE = "iou"
_C.MODEL.DSLA.REG_LOSS_WEIGHT = 1.0
_C.MODEL.DSLA.IOU_LOSS_EPS = 1e-6
_C.MODEL.DSLA.INFERENCE_TH = 0.05
_C.MODEL.DSLA.NMS_TH = 0.6
_C.MODEL.DSLA.PRE_NMS_TOP_N = 1000

# --------------------------------------------------------------------------- #
# DW head (new; dw.md 9.1, defaults = dw_r50_fpn_1x_coco)
# --------------------------------------------------------------------------- #
_C.MODEL.DW = CN()
_C.MODEL.DW.NUM_CLASSES = 81
_C.MODEL.DW.NUM_CONVS = 4
_C.MODEL.DW.FPN_STRIDES = [8, 16, 32, 64, 128]
_C.MODEL.DW.POINT_OFFSET = 0.5
_C.MODEL.DW.USE_GN = True
_C.MODEL.DW.CONV_BIAS = True
# DCNv2 as the last conv of both towers (dconv config).
_C.MODEL.DW.USE_DCN_IN_TOWER = False
_C.MODEL.DW.INIT_STD = 0.01
_C.MODEL.DW.PRIOR_PROB = 0.02
_C.MODEL.DW.REG_BIAS_INIT = 4.0
# Box refinement by deformable sampling (False = the "worefine" configs).
_C.MODEL.DW.REG_REFINE = True
# Gaussian centre prior, in units of the point's stride.
_C.MODEL.DW.SOFT_PRIOR = True
_C.MODEL.DW.HARD_PRIOR_THRESH = 0.3
_C.MODEL.DW.PRIOR_MEAN = 0.0
_C.MODEL.DW.PRIOR_SIGMA = 1.11
# Positive weight: p_loc = exp(-REG_SCORE_EXP * GIOU_LOSS_WEIGHT * (1 - GIoU)).
_C.MODEL.DW.GIOU_LOSS_WEIGHT = 1.0
_C.MODEL.DW.REG_SCORE_EXP = 5.0
_C.MODEL.DW.POS_EXP_NUM = 5.0
_C.MODEL.DW.POS_EXP_DEN = 3.0
# Negative weight: P_neg from the IoU, importance = joint score ** NEG_GAMMA.
_C.MODEL.DW.NEG_IOU_THRESH = 0.5
_C.MODEL.DW.NEG_ALPHA = 2.0
_C.MODEL.DW.NEG_GAMMA = 2.0
_C.MODEL.DW.POS_CLS_WEIGHT = 0.25
_C.MODEL.DW.LOC_WEIGHT = 0.25
_C.MODEL.DW.NEG_CLS_WEIGHT = 1.0
_C.MODEL.DW.EPS = 1e-12
# Inference threshold and per-level top-k on cls x objectness.
_C.MODEL.DW.INFERENCE_TH = 0.05
_C.MODEL.DW.NMS_TH = 0.6
_C.MODEL.DW.PRE_NMS_TOP_N = 1000

# --------------------------------------------------------------------------- #
# O2F head (new; o2f.md 9.2, defaults = r50_1x)
# --------------------------------------------------------------------------- #
_C.MODEL.O2F = CN()
_C.MODEL.O2F.NUM_CLASSES = 81
_C.MODEL.O2F.FPN_STRIDES = [8, 16, 32, 64, 128]
_C.MODEL.O2F.NUM_CONVS = 4
_C.MODEL.O2F.CHANNELS = 256
_C.MODEL.O2F.POINT_OFFSET = 0.5
_C.MODEL.O2F.USE_GN = True
_C.MODEL.O2F.CONV_BIAS = True
# Objectness sub-tower on the box tower's output.
_C.MODEL.O2F.OBJ_NUM_CONVS = 3
_C.MODEL.O2F.OBJ_CHANNELS = 64
_C.MODEL.O2F.PRIOR_PROB = 0.01
_C.MODEL.O2F.INIT_STD = 0.01
_C.MODEL.O2F.SCALE_INIT = 1.0
_C.MODEL.O2F.CENTER_SAMPLING_RADIUS = 1.5
# quality = prob ** (1 - POTO_ALPHA) * IoU ** POTO_ALPHA; TOPK candidates per gt.
_C.MODEL.O2F.POTO_ALPHA = 0.8
_C.MODEL.O2F.TOPK = 7
_C.MODEL.O2F.MAIN_WEIGHT = 1.0
_C.MODEL.O2F.SOFT_WEIGHT = 0.4
# Soft-anchor target scale T, from SOFT_T_START to SOFT_T_END over training.
_C.MODEL.O2F.SOFT_T_START = 0.6
_C.MODEL.O2F.SOFT_T_END = 0.2
_C.MODEL.O2F.SCHEDULE_EPOCHS = 12
# "epoch" (step-wise, as the original) or "linear" (smooth in iterations).
_C.MODEL.O2F.SCHEDULE_MODE = "epoch"
# 0 = SOLVER.MAX_ITER / SCHEDULE_EPOCHS.
_C.MODEL.O2F.ITERS_PER_EPOCH = 0
_C.MODEL.O2F.NEG_WEIGHT = 0.75
_C.MODEL.O2F.NEG_GAMMA = 2.0
_C.MODEL.O2F.CLS_LOSS_WEIGHT = 1.0
_C.MODEL.O2F.REG_LOSS_WEIGHT = 2.0
_C.MODEL.O2F.IOU_LOSS_EPS = 1e-6
_C.MODEL.O2F.INFERENCE_TH = 0.05
_C.MODEL.O2F.PRE_NMS_TOP_N = 1000
# NMS-free by default (every released config); NMS_TH is used only with USE_NMS.
_C.MODEL.O2F.USE_NMS = False
_C.MODEL.O2F.NMS_TH = 0.6

# --------------------------------------------------------------------------- #
# Solver
# --------------------------------------------------------------------------- #
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
# lr multiplier and weight decay for parameters whose name contains "bias".
_C.SOLVER.BIAS_LR_FACTOR = 2.0
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
# Extra lr multiplier for deformable-conv offset parameters.
_C.SOLVER.DCONV_OFFSETS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005
# new: if >= 0, all norm-layer parameters get BASE_LR and this decay (C15).
_C.SOLVER.WEIGHT_DECAY_NORM = -1.0
# new: "SGD" or "AdamW" (C16).
_C.SOLVER.OPTIMIZER = "SGD"
_C.SOLVER.ADAMW_BETAS = (0.9, 0.999)
# new: max L2 norm of all gradients; 0 disables clipping (C17).
_C.SOLVER.CLIP_GRAD_NORM = 0.0
_C.SOLVER.GAMMA = 0.1
# Iterations at which the lr is multiplied by GAMMA.
_C.SOLVER.STEPS = (30000,)
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
_C.SOLVER.WARMUP_ITERS = 500
# "constant" or "linear".
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 2500
# new (maskrcnn-benchmark's name): evaluate every N iterations; 0 = off.
_C.SOLVER.TEST_PERIOD = 0
# Global batch, split over all processes.
_C.SOLVER.IMS_PER_BATCH = 16
# new: batch the schedule was tuned for; if > 0 and != IMS_PER_BATCH, BASE_LR is
# scaled by IMS_PER_BATCH / it and WARMUP_ITERS, STEPS, MAX_ITER,
# CHECKPOINT_PERIOD, TEST_PERIOD inversely (logged); 0 = off.
_C.SOLVER.AUTO_SCALE_REFERENCE_BATCH = 0
# new: iterations between training log lines and TensorBoard writes.
_C.SOLVER.LOG_PERIOD = 20

# --------------------------------------------------------------------------- #
# Test
# --------------------------------------------------------------------------- #
_C.TEST = CN()
# [[task, metric, [mean, std]], ...] checked after evaluation.
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4
# Global test batch, split over all processes.
_C.TEST.IMS_PER_BATCH = 8
# Final per-image cap of every head.
_C.TEST.DETECTIONS_PER_IMG = 100

# Test-time augmentation (engine/tta.py).
_C.TEST.BBOX_AUG = CN()
# Evaluate with the passes below and merge their detections.
_C.TEST.BBOX_AUG.ENABLED = False
# Add a horizontally flipped pass at the test size.
_C.TEST.BBOX_AUG.H_FLIP = False
# Extra shorter-side sizes, one pass each.
_C.TEST.BBOX_AUG.SCALES = ()
# Longer-side cap of the extra sizes (with VOTE: only of sizes >= 800).
_C.TEST.BBOX_AUG.MAX_SIZE = 4000
# Add a flipped pass at every extra size.
_C.TEST.BBOX_AUG.SCALE_H_FLIP = False
# Merge by per-class MERGE_TYPE and SCALE_RANGES instead of NMS + final cap.
_C.TEST.BBOX_AUG.VOTE = False
# IoU (+1 convention) that puts boxes in one voting cluster.
_C.TEST.BBOX_AUG.VOTE_TH = 0.66
# With VOTE: per extra size, [min, max]: keep boxes with min^2 < area < max^2.
_C.TEST.BBOX_AUG.SCALE_RANGES = ()
# With VOTE: 'nms', 'vote' or 'soft-vote'.
_C.TEST.BBOX_AUG.MERGE_TYPE = "vote"

# --------------------------------------------------------------------------- #
# Misc
# --------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "."
_C.PATHS_CATALOG = os.path.join(os.path.dirname(__file__), "paths_catalog.py")
# new (maskrcnn-benchmark's key): "float32", "float16" or "bfloat16" autocast.
_C.DTYPE = "float32"
# new: seed of python, numpy and torch RNGs; < 0 draws one and logs it.
_C.SEED = -1
# new: deterministic kernels (cuDNN without autotuning, deterministic torch
# algorithms where they exist; slower on GPU).
_C.DETERMINISTIC = False

add_legacy_keys(_C)
