"""O2F head (strongwolf/o2f ``O2FHead``, checkpoints.md §1.5, §2.4) <-> our ``O2FTower``.

The objectness sub-tower ``centerness_convs`` becomes ``centerness_tower`` (same
[conv, GN, ReLU] index rule as the towers) and ``conv_centerness`` becomes
``centerness``. The head's other settings come from ``meta['config']`` when present.
"""
import re

from . import HEAD_CONVERTERS, HeadConverter
from .common import ConversionError, rename_head

TOWERS = {"cls_convs": "cls_tower", "reg_convs": "bbox_tower", "centerness_convs": "centerness_tower"}
PREDICTORS = {"conv_cls": "cls_logits", "conv_reg": "bbox_pred", "conv_centerness": "centerness"}
# meta['config'] value -> our key: (pattern of the value, type).
_CONFIG_VALUES = {
    "MODEL.O2F.TOPK": (r"o2f_topk\s*=\s*(\d+)", int),
    "MODEL.O2F.POTO_ALPHA": (r"poto_alpha\s*=\s*([\d.]+)", float),
    "MODEL.O2F.SCHEDULE_EPOCHS": (r"max_epoch\s*=\s*(\d+)", int),
    "MODEL.O2F.INFERENCE_TH": (r"score_thr\s*=\s*([\d.]+)", float),
    "MODEL.O2F.PRE_NMS_TOP_N": (r"nms_pre\s*=\s*(\d+)", int),
    "TEST.DETECTIONS_PER_IMG": (r"max_per_img\s*=\s*(\d+)", int),
}


def _count(sd, tower):
    return len({k.split(".")[1] for k in sd if k.startswith(tower + ".")})


def _head_overrides(sd, config_text):
    """Config values of the O2F head: its structure from the keys, its options from the config."""
    if any(".conv_offset." in k for k in sd):
        raise ConversionError("O2F towers with deformable convs are not supported (no O2F config uses them)")
    if not any(k.startswith("centerness_convs.") and ".gn." in k for k in sd):
        raise ConversionError("O2F towers without GroupNorm are not supported (every O2F config uses GN)")
    overrides = {
        "MODEL.O2F.NUM_CLASSES": int(sd["conv_cls.weight"].shape[0]) + 1,
        "MODEL.O2F.NUM_CONVS": _count(sd, "cls_convs"),
        "MODEL.O2F.CHANNELS": int(sd["cls_convs.0.conv.weight"].shape[0]),
        "MODEL.O2F.CONV_BIAS": "cls_convs.0.conv.bias" in sd,
        "MODEL.O2F.OBJ_NUM_CONVS": _count(sd, "centerness_convs"),
        "MODEL.O2F.OBJ_CHANNELS": int(sd["centerness_convs.0.conv.weight"].shape[0]),
    }
    for key, (pattern, kind) in _CONFIG_VALUES.items():
        m = re.search(pattern, config_text or "")
        if m:
            overrides[key] = kind(m.group(1))
    radius = re.search(r"center_sample_radius\s*=\s*([\d.]+)", config_text or "")
    if re.search(r"center_sampling\s*=\s*False", config_text or ""):
        overrides["MODEL.O2F.CENTER_SAMPLING_RADIUS"] = 0.0
    elif radius:
        overrides["MODEL.O2F.CENTER_SAMPLING_RADIUS"] = float(radius.group(1))
    if re.search(r"with_nms\s*=\s*True", config_text or ""):
        overrides["MODEL.O2F.USE_NMS"] = True
    return overrides


def to_ours(sd, config_text=""):
    return rename_head(sd, TOWERS, PREDICTORS, to_ours=True, method="O2F"), _head_overrides(sd, config_text), []


def to_mmdet(sd):
    return rename_head(sd, TOWERS, PREDICTORS, to_ours=False, method="O2F")


HEAD_CONVERTERS.register("O2F")(HeadConverter(to_ours, to_mmdet))
