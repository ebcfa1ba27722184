"""DSLA head (YonghaoHe/DSLA ``DSLAHead``, checkpoints.md §1.5, §2.4) <-> our DSLA ``Tower``."""
import re
from collections import OrderedDict

from . import HEAD_CONVERTERS, HeadConverter
from .common import ConversionError, rename_head

TOWERS = {"cls_convs": "cls_tower", "reg_convs": "bbox_tower"}
PREDICTORS = {"conv_cls": "cls_logits", "conv_reg": "bbox_pred"}
# mmdet 1.x names of the predictors (AnchorFreeHead version < 1).
LEGACY = {"fcos_cls": "conv_cls", "fcos_reg": "conv_reg"}


def _modern(key):
    module, dot, rest = key.partition(".")
    return LEGACY.get(module, module) + dot + rest


def _head_overrides(sd, config_text):
    """Config values of the DSLA head from its keys, plus the box output mode from the config."""
    tower = [k for k in sd if k.startswith("cls_convs.")]
    if not any(".gn." in k for k in tower):
        raise ConversionError("DSLA towers without GroupNorm are not supported (every DSLA config uses GN)")
    overrides = {
        "MODEL.DSLA.NUM_CLASSES": int(sd["conv_cls.weight"].shape[0]) + 1,
        "MODEL.DSLA.NUM_CONVS": len({k.split(".")[1] for k in tower}),
        "MODEL.DSLA.CONV_BIAS": "cls_convs.0.conv.bias" in sd,
        "MODEL.DSLA.USE_DCN_IN_TOWER": any(".conv_offset." in k for k in tower),
        "MODEL.DSLA.NORM_REG_TARGETS": bool(re.search(r"norm_on_bbox\s*=\s*True", config_text)),
    }
    if re.search(r"center_sampling\s*=\s*True", config_text):
        radius = re.search(r"center_sample_radius\s*=\s*([\d.]+)", config_text)
        overrides["MODEL.DSLA.CENTER_SAMPLING_RADIUS"] = float(radius.group(1)) if radius else 1.5
    return overrides


def to_ours(sd, config_text=""):
    sd = OrderedDict((_modern(k), v) for k, v in sd.items())
    return rename_head(sd, TOWERS, PREDICTORS, to_ours=True, method="DSLA"), _head_overrides(sd, config_text), []


def to_mmdet(sd):
    return rename_head(sd, TOWERS, PREDICTORS, to_ours=False, method="DSLA")


HEAD_CONVERTERS.register("DSLA")(HeadConverter(to_ours, to_mmdet))
