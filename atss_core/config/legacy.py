"""Inert R-CNN/FBNet keys of sfzhang15/ATSS ``defaults.py`` (spec C3).

Nothing reads them. They exist only because yacs rejects unknown keys and
shipped configs (e.g. RetinaNet's) still set some of them.
"""
from yacs.config import CfgNode as CN


def add_legacy_keys(cfg):
    rpn = cfg.MODEL.RPN = CN()
    rpn.USE_FPN = False
    rpn.ANCHOR_SIZES = (32, 64, 128, 256, 512)
    rpn.ANCHOR_STRIDE = (16,)
    rpn.ASPECT_RATIOS = (0.5, 1.0, 2.0)
    rpn.STRADDLE_THRESH = 0
    rpn.FG_IOU_THRESHOLD = 0.7
    rpn.BG_IOU_THRESHOLD = 0.3
    rpn.BATCH_SIZE_PER_IMAGE = 256
    rpn.POSITIVE_FRACTION = 0.5
    rpn.PRE_NMS_TOP_N_TRAIN = 12000
    rpn.PRE_NMS_TOP_N_TEST = 6000
    rpn.POST_NMS_TOP_N_TRAIN = 2000
    rpn.POST_NMS_TOP_N_TEST = 1000
    rpn.NMS_THRESH = 0.7
    rpn.MIN_SIZE = 0
    rpn.FPN_POST_NMS_TOP_N_TRAIN = 2000
    rpn.FPN_POST_NMS_TOP_N_TEST = 2000
    rpn.FPN_POST_NMS_PER_BATCH = True
    rpn.RPN_HEAD = "SingleConvRPNHead"

    roi = cfg.MODEL.ROI_HEADS = CN()
    roi.USE_FPN = False
    roi.FG_IOU_THRESHOLD = 0.5
    roi.BG_IOU_THRESHOLD = 0.5
    roi.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    roi.BATCH_SIZE_PER_IMAGE = 512
    roi.POSITIVE_FRACTION = 0.25
    roi.SCORE_THRESH = 0.05
    roi.NMS = 0.5
    roi.DETECTIONS_PER_IMG = 100

    def pooled_head(extractor, predictor):
        node = CN()
        node.FEATURE_EXTRACTOR = extractor
        node.PREDICTOR = predictor
        node.POOLER_RESOLUTION = 14
        node.POOLER_SAMPLING_RATIO = 0
        node.POOLER_SCALES = (1.0 / 16,)
        node.MLP_HEAD_DIM = 1024
        return node

    box = cfg.MODEL.ROI_BOX_HEAD = pooled_head("ResNet50Conv5ROIFeatureExtractor", "FastRCNNPredictor")
    box.NUM_CLASSES = 81
    box.USE_GN = False
    box.DILATION = 1
    box.CONV_HEAD_DIM = 256
    box.NUM_STACKED_CONVS = 4

    mask = cfg.MODEL.ROI_MASK_HEAD = pooled_head("ResNet50Conv5ROIFeatureExtractor", "MaskRCNNC4Predictor")
    mask.CONV_LAYERS = (256, 256, 256, 256)
    mask.RESOLUTION = 14
    mask.SHARE_BOX_FEATURE_EXTRACTOR = True
    mask.POSTPROCESS_MASKS = False
    mask.POSTPROCESS_MASKS_THRESHOLD = 0.5
    mask.DILATION = 1
    mask.USE_GN = False

    kp = cfg.MODEL.ROI_KEYPOINT_HEAD = pooled_head("KeypointRCNNFeatureExtractor", "KeypointRCNNPredictor")
    kp.CONV_LAYERS = tuple(512 for _ in range(8))
    kp.RESOLUTION = 14
    kp.NUM_CLASSES = 17
    kp.SHARE_BOX_FEATURE_EXTRACTOR = True

    fb = cfg.MODEL.FBNET = CN()
    fb.ARCH = "default"
    fb.ARCH_DEF = ""
    fb.BN_TYPE = "bn"
    fb.SCALE_FACTOR = 1.0
    fb.WIDTH_DIVISOR = 1
    fb.DW_CONV_SKIP_BN = True
    fb.DW_CONV_SKIP_RELU = True
    for part, scale in (("DET", 1.0), ("KPTS", 0.0), ("MASK", 0.0)):
        setattr(fb, part + "_HEAD_LAST_SCALE", scale)
        setattr(fb, part + "_HEAD_BLOCKS", [])
        setattr(fb, part + "_HEAD_STRIDE", 0)
    fb.RPN_HEAD_BLOCKS = 0
    fb.RPN_BN_TYPE = ""
