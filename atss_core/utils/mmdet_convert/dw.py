"""DW head (strongwolf/DW ``DWHead``, checkpoints.md §1.5, §2.4, §2.6) <-> our ``DWTower``.

The mmdet head stores its frozen centre prior (``center_prior.mean`` [C, 2] zeros,
``center_prior.sigma`` [C, 2] 1.11) as parameters; ours takes mean and sigma
from MODEL.DW.PRIOR_MEAN / PRIOR_SIGMA, so the two keys are checked and dropped,
and regenerated on export.
"""
import warnings

import torch

from . import HEAD_CONVERTERS, HeadConverter
from .common import ConversionError, rename_head

TOWERS = {"cls_convs": "cls_tower", "reg_convs": "bbox_tower"}
PREDICTORS = {
    "conv_cls": "cls_logits",
    "conv_reg": "bbox_pred",
    "conv_centerness": "centerness",
    "reg_offset": "reg_offset",
}
PRIOR_KEYS = ("center_prior.mean", "center_prior.sigma")
# The constants of DW's CenterPrior (float32 1.11 = 1.1100000143).
PRIOR_MEAN, PRIOR_SIGMA = 0.0, 1.11


def _prior_overrides(sd) -> dict:
    """Check the stored prior against DW's constants: silent if equal, else warn and, when one
    value serves every class and axis (all our config can express), override the config."""
    missing = [k for k in PRIOR_KEYS if k not in sd]
    if missing:
        raise ConversionError(f"DW head without {['bbox_head.' + k for k in missing]}")
    overrides = {}
    for key, name, default in zip(PRIOR_KEYS, ("PRIOR_MEAN", "PRIOR_SIGMA"), (PRIOR_MEAN, PRIOR_SIGMA)):
        value = sd[key].float()
        if torch.allclose(value, torch.full_like(value, default), rtol=0, atol=1e-6):
            continue
        uniform = bool((value == value.flatten()[0]).all())
        if uniform:
            overrides[f"MODEL.DW.{name}"] = float(value.flatten()[0])
        warnings.warn(
            f"bbox_head.{key} is not DW's constant {default} (got values in [{value.min():.6g}, {value.max():.6g}]); "
            + (f"setting MODEL.DW.{name} to it" if uniform else "per-class values cannot be expressed: dropped")
        )
    return overrides


def _head_overrides(sd) -> dict:
    """MODEL.DW values that the keys determine: structure, refinement, prior."""
    cls_tower = [k for k in sd if k.startswith("cls_convs.")]
    if not any(".gn." in k for k in cls_tower):
        raise ConversionError("DW towers without GroupNorm are not supported (every DW config uses GN)")
    structure = {
        "NUM_CLASSES": int(sd["conv_cls.weight"].shape[0]) + 1,
        "NUM_CONVS": len({k.split(".")[1] for k in cls_tower}),
        "CONV_BIAS": "cls_convs.0.conv.bias" in sd,
        "USE_DCN_IN_TOWER": any(".conv_offset." in k for k in cls_tower),
        "REG_REFINE": "reg_offset.weight" in sd,
    }
    return {**{f"MODEL.DW.{k}": v for k, v in structure.items()}, **_prior_overrides(sd)}


def to_ours(sd, config_text=""):
    overrides = _head_overrides(sd)
    kept = {k: v for k, v in sd.items() if k not in PRIOR_KEYS}
    return rename_head(kept, TOWERS, PREDICTORS, to_ours=True, method="DW"), overrides, list(PRIOR_KEYS)


def to_mmdet(sd):
    """Ours -> mmdet, with the centre prior regenerated as DW's constants."""
    out = rename_head(sd, TOWERS, PREDICTORS, to_ours=False, method="DW")
    num_classes = sd["cls_logits.weight"].shape[0]
    out["center_prior.mean"] = torch.full((num_classes, 2), PRIOR_MEAN)
    out["center_prior.sigma"] = torch.full((num_classes, 2), PRIOR_SIGMA)
    return out


HEAD_CONVERTERS.register("DW")(HeadConverter(to_ours, to_mmdet))
