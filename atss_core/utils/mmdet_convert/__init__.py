"""Conversion of mmdetection 2.x detector checkpoints (DSLA, DW, O2F) into ours, and back
for round-trip tests (checkpoints.md §2).

Usage::

    sd_ours, overrides, report = convert(torch.load(path)["state_dict"], meta=..., style=...)

Adding a head: write a module here with a :class:`HeadConverter` and
register it under the head name used by :func:`detect_head` (``"DSLA"``,
``"DW"``, ``"O2F"``); import it at the bottom of this file. The backbone,
neck and tower mapping are shared (``common.py``).
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from atss_core.utils.registry import Registry

from .common import (
    ConversionError,
    StateDict,
    backbone_overrides,
    backbone_to_mmdet,
    backbone_to_ours,
    modern_dcn_key,
    neck_overrides,
    neck_to_mmdet,
    neck_to_ours,
)

# mmdet part prefix -> ours.
PREFIXES = {"backbone.": "backbone.body.", "neck.": "backbone.fpn.", "bbox_head.": "rpn.head."}
# Input normalisation of the two recipes (checkpoints.md §2.7 / spec C13), as our INPUT keys.
_CAFFE_INPUT = {"INPUT.TO_BGR255": True, "INPUT.PIXEL_MEAN": [102.9801, 115.9465, 122.7717], "INPUT.PIXEL_STD": [1.0, 1.0, 1.0]}
_TORCHVISION_INPUT = {"INPUT.TO_BGR255": False, "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406], "INPUT.PIXEL_STD": [0.229, 0.224, 0.225]}


class HeadConverter(NamedTuple):
    """The per-method part of a conversion; ``head_sd`` keys carry no ``bbox_head.``/``rpn.head.`` prefix.

    to_ours(head_sd, config_text) -> (our head keys, cfg overrides, dropped keys); must
        raise :class:`ConversionError` on any key it cannot map.
    to_mmdet(head_sd) -> mmdet head keys (for round trips).
    """

    to_ours: Callable
    to_mmdet: Callable


HEAD_CONVERTERS = Registry("mmdet head converter")


class ConversionReport(NamedTuple):
    head: str
    num_source_keys: int
    num_converted_keys: int
    dropped: List[str]
    notes: List[str]


def split_parts(sd: StateDict) -> Dict[str, StateDict]:
    """mmdet state dict -> {"backbone.": ..., "neck.": ..., "bbox_head.": ...} without prefixes.

    Strips a leading ``module.`` (DDP) and modernises legacy DCN offset names.
    """
    parts = {prefix: OrderedDict() for prefix in PREFIXES}
    unknown = []
    for key, value in sd.items():
        key = modern_dcn_key(key[len("module."):] if key.startswith("module.") else key)
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            parts[prefix][key[len(prefix):]] = value
    if unknown:
        raise ConversionError(f"keys outside backbone./neck./bbox_head.: {unknown[:10]}")
    return parts


def detect_head(head_keys: Sequence[str]) -> str:
    """The method of an mmdet head from its keys (checkpoints.md §2.7)."""
    top = {k.split(".")[0] for k in head_keys}
    if "centerness_convs" in top:
        return "O2F"
    if "center_prior" in top:
        return "DW"
    if "conv_centerness" in top:
        raise ConversionError("a head with conv_centerness but no center_prior/centerness_convs is a plain FCOS head: unsupported")
    if "conv_cls" not in top and "fcos_cls" not in top:
        raise ConversionError(f"no conv_cls in the head: not a DSLA/DW/O2F checkpoint (head modules: {sorted(top)})")
    return "DSLA"


def _style(config_text: str, style: Optional[str]) -> str:
    found = re.findall(r"style\s*=\s*'(caffe|pytorch)'", config_text or "")
    if style is None and not found:
        raise ConversionError(
            "the ResNet style (caffe: stride in the 1x1 conv; pytorch: in the 3x3) is not recorded in the weights "
            "and the checkpoint has no meta['config']: pass style='caffe' or 'pytorch' (--style)"
        )
    if style is not None and found and style != found[0]:
        raise ConversionError(f"style={style!r} contradicts the checkpoint's config (style='{found[0]}')")
    return style or found[0]


def _floats(text: str) -> List[float]:
    return [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]


def input_overrides(config_text: str, style: str) -> Tuple[dict, str]:
    """Our INPUT keys reproducing mmdet's ``img_norm_cfg`` (mean/std on 0-255, optional BGR->RGB).

    to_rgb=True -> RGB in [0, 1]: mean/255, std/255 (C13); to_rgb=False -> BGR 0-255 as is.
    Without a config the recipe of the style is assumed (and said in the note).
    """
    m = re.search(
        r"img_norm_cfg\s*=\s*dict\(\s*mean\s*=\s*\[([^\]]*)\]\s*,\s*std\s*=\s*\[([^\]]*)\]\s*,\s*to_rgb\s*=\s*(True|False)",
        config_text or "",
    )
    if not m:
        recipe = _CAFFE_INPUT if style == "caffe" else _TORCHVISION_INPUT
        return dict(recipe), f"no img_norm_cfg in meta['config']: assumed the {style} input normalisation"
    mean, std, to_rgb = _floats(m.group(1)), _floats(m.group(2)), m.group(3) == "True"
    if not to_rgb:
        return {"INPUT.TO_BGR255": True, "INPUT.PIXEL_MEAN": mean, "INPUT.PIXEL_STD": std}, ""
    return {
        "INPUT.TO_BGR255": False,
        "INPUT.PIXEL_MEAN": [round(v / 255, 6) for v in mean],
        "INPUT.PIXEL_STD": [round(v / 255, 6) for v in std],
    }, ""


def _check_classes(head_sd: StateDict, classes: Optional[Sequence[str]]):
    """Rows of the class conv are copied in order; the checkpoint's class list must match their count."""
    cls = head_sd.get("conv_cls.weight", head_sd.get("fcos_cls.weight"))
    if classes is not None and cls is not None and len(classes) != cls.shape[0]:
        raise ConversionError(f"meta['CLASSES'] names {len(classes)} classes but conv_cls has {cls.shape[0]} rows")


def convert(
    sd_mm: StateDict, meta: Optional[dict] = None, style: Optional[str] = None, bn_eps: float = 0.0
) -> Tuple[StateDict, dict, ConversionReport]:
    """An mmdet detector state dict -> (our state dict, cfg overrides, report).

    Args:
        sd_mm: the ``state_dict`` entry of the checkpoint.
        meta: its ``meta`` entry; ``meta["config"]`` (the config text) gives the
            ResNet style, input normalisation and head options.
        style: "caffe" or "pytorch", required when ``meta`` has no config.
        bn_eps: ``MODEL.RESNETS.BN_EPS`` of the target model; running
            variances are shifted by 1e-5 - bn_eps.
    Returns:
        keys ``backbone.body.*``, ``backbone.fpn.*``, ``rpn.head.*`` (loadable
        with ``strict=True`` into a model built with the overrides); overrides
        as flat {"MODEL.X.Y": value}; the report. Any unmappable key raises
        :class:`ConversionError`.
    """
    config_text = (meta or {}).get("config", "") or ""
    parts = split_parts(sd_mm)
    head = detect_head(list(parts["bbox_head."]))
    _check_classes(parts["bbox_head."], (meta or {}).get("CLASSES"))
    style = _style(config_text, style)
    overrides = {f"MODEL.{head}_ON": True}
    overrides.update(backbone_overrides(parts["backbone."], style == "caffe", bn_eps, config_text))
    neck_cfg, start_level = neck_overrides(parts["neck."], config_text)
    overrides.update(neck_cfg)
    inputs, note = input_overrides(config_text, style)
    overrides.update(inputs)

    body, dropped = backbone_to_ours(parts["backbone."], bn_eps)
    head_sd, head_cfg, head_dropped = HEAD_CONVERTERS[head].to_ours(parts["bbox_head."], config_text)
    overrides.update(head_cfg)
    out = OrderedDict()
    for prefix, part in zip(PREFIXES.values(), (body, neck_to_ours(parts["neck."], start_level), head_sd)):
        out.update((prefix + k, v) for k, v in part.items())
    dropped = ["backbone." + k for k in dropped] + ["bbox_head." + k for k in head_dropped]
    report = ConversionReport(head, len(sd_mm), len(out), dropped, [note] if note else [])
    return out, overrides, report


def as_opts(overrides: dict) -> List[str]:
    """Overrides as ``KEY VALUE`` command-line options (what ``cfg.merge_from_list`` and the tools take)."""
    return [item for key, value in overrides.items() for item in (key, repr(value) if not isinstance(value, str) else value)]


def export(sd_ours: StateDict, head: str, bn_eps: float = 0.0) -> StateDict:
    """Our state dict -> mmdet key names (round-trip tests, checkpoints.md §2.8)."""
    parts = {prefix: OrderedDict() for prefix in PREFIXES.values()}
    for key, value in sd_ours.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            raise ConversionError(f"cannot export {key}: not under {sorted(parts)}")
        parts[prefix][key[len(prefix):]] = value
    body, fpn, head_sd = parts.values()
    out = OrderedDict()
    for prefix, part in zip(
        PREFIXES, (backbone_to_mmdet(body, bn_eps), neck_to_mmdet(fpn), HEAD_CONVERTERS[head].to_mmdet(head_sd))
    ):
        out.update((prefix + k, v) for k, v in part.items())
    return out


from . import dsla  # noqa: E402,F401  (registers the head converter)
from . import dw  # noqa: E402,F401  (registers the head converter)
from . import o2f  # noqa: E402,F401  (registers the head converter)

__all__ = [
    "HEAD_CONVERTERS",
    "ConversionError",
    "ConversionReport",
    "HeadConverter",
    "as_opts",
    "convert",
    "detect_head",
    "export",
]
