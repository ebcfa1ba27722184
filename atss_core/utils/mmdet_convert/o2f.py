"""O2F head (strongwolf/o2f ``O2FHead``, checkpoints.md §1.5, §2.4) <-> our ``O2FTower``.

The objectness sub-tower ``centerness_convs`` becomes ``centerness_tower`` (same
[conv, GN, ReLU] index rule as the towers) and ``conv_centerness`` becomes
``centerness``. The head's other settings come from ``meta['config']`` when present.
"""
import re
from collections import OrderedDict

from . import HEAD_CONVERTERS, HeadConverter
from .common import ConversionError, map_predictors, scale_to_mmdet, scale_to_ours, tower_to_mmdet, tower_to_ours

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


def _rename(sd, to_ours: bool):
    """Towers, predictors and scales of the head in one direction; any other key raises."""
    towers, names, scale = (
        (tower_to_ours, PREDICTORS, scale_to_ours)
        if to_ours
        else (tower_to_mmdet, {v: k for k, v in PREDICTORS.items()}, scale_to_mmdet)
    )
    renamed, rest = towers(OrderedDict(sd), TOWERS)
    predictors, unknown = map_predictors(sd, rest, names, scale)
    if unknown:
        prefix = "bbox_head." if to_ours else "rpn.head."
        raise ConversionError(f"O2F head keys without a counterpart: {[prefix + k for k in unknown]}")
    return OrderedDict([*renamed.items(), *predictors.items()])


def to_ours(sd, config_text=""):
    return _rename(sd, to_ours=True), _head_overrides(sd, config_text), []


def to_mmdet(sd):
    return _rename(sd, to_ours=False)


HEAD_CONVERTERS.register("O2F")(HeadConverter(to_ours, to_mmdet))
