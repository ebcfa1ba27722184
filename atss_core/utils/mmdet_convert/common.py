"""Key mapping shared by every mmdetection 2.x detector: ResNet backbone, FPN neck and the
head towers (checkpoints.md §2.2-2.5), in both directions.

All functions take and return state dicts *without* the top-level prefix of
their part (mmdet ``backbone.``/``neck.``/``bbox_head.``; ours
``backbone.body.``/``backbone.fpn.``/``rpn.head.``); ``__init__`` adds them.
Tensors are copied as they are, except: BN ``running_var`` gets
``SOURCE_BN_EPS - bn_eps`` added (mmdet BN divides by sqrt(v + 1e-5), ours by
sqrt(v + bn_eps)), ``num_batches_tracked`` is dropped (regenerated as 0 on
export) and ``Scale`` values go from shape [] to [1].
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]

# eps of mmdet's BN (nn.BatchNorm2d), which every converted backbone was trained with.
SOURCE_BN_EPS = 1e-5
# Stage i of ResNet-50/101 has this many blocks; the last index of layer3 tells the depth.
_DEPTH_BY_LAYER3_BLOCKS = {6: 50, 23: 101}
_CONV_BODIES = {50: "R-50-FPN-RETINANET", 101: "R-101-FPN-RETINANET"}


class ConversionError(ValueError):
    """A checkpoint that cannot be mapped exactly (unknown, missing or ambiguous keys)."""


def fold_bn_eps(value: Tensor, bn_eps: float) -> Tensor:
    """``running_var`` of a BN with eps 1e-5 for a BN with eps ``bn_eps`` (same output)."""
    shift = SOURCE_BN_EPS - bn_eps
    return value + shift if shift else value


def unfold_bn_eps(value: Tensor, bn_eps: float) -> Tensor:
    shift = SOURCE_BN_EPS - bn_eps
    return value - shift if shift else value


def modern_dcn_key(key: str) -> str:
    """mmcv < 2 spelled a DCN's offset conv ``<conv>_offset.*`` beside the conv (e.g.
    ``conv2_offset.weight``); since then it is ``<conv>.conv_offset.*``. Returns the modern name."""
    tokens = key.split(".")
    for i, token in enumerate(tokens):
        modern = token == "conv_offset" and i > 0 and tokens[i - 1].startswith("conv")
        if token.endswith("_offset") and token.startswith("conv") and not modern:
            return ".".join(tokens[:i] + [token[: -len("_offset")], "conv_offset"] + tokens[i + 1:])
    return key


# --------------------------------------------------------------------------- backbone
_DCN_OFFSET = re.compile(r"^layer(\d+)\.(\d+)\.conv2\.conv_offset\.(weight|bias)$")
_STAGE_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")


def _dcn_stages(sd: StateDict, config_text: str) -> Tuple[Tuple[bool, ...], bool, int]:
    """(STAGE_WITH_DCN, WITH_MODULATED_DCN, DEFORMABLE_GROUPS) from the offset convs.

    DCN v1 offsets have 18 rows per deformable group, v2 27; where both
    divide (54, 108, ...) the config's ``dcn=dict(type=...)`` decides.
    """
    rows = {int(m.group(1)): sd[k].shape[0] for k in sd if (m := _DCN_OFFSET.match(k)) and m.group(3) == "weight"}
    stages = tuple(i in rows for i in range(1, 5))
    if not rows:
        return stages, False, 1
    kinds = set(rows.values())
    if len(kinds) != 1:
        raise ConversionError(f"backbone DCN offset convs differ in size between stages: {rows}")
    n = kinds.pop()
    v1, v2 = n % 18 == 0, n % 27 == 0
    if v1 and v2:
        m = re.search(r"dcn\s*=\s*dict\(\s*type\s*=\s*'(DCNv2|DCN)'", config_text or "")
        if not m:
            raise ConversionError(f"backbone DCN offset convs have {n} rows: v1 or v2 cannot be told without meta['config']")
        v2 = m.group(1) == "DCNv2"
    elif not (v1 or v2):
        raise ConversionError(f"backbone DCN offset convs have {n} rows, not a multiple of 18 (v1) or 27 (v2)")
    return stages, v2, n // (27 if v2 else 18)


def backbone_overrides(sd: StateDict, stride_in_1x1: bool, bn_eps: float, config_text: str = "") -> dict:
    """Config values the mmdet ResNet state dict ``sd`` needs (depth, groups, DCN, style, BN eps)."""
    if "conv1.weight" not in sd or not any(k.startswith("layer4.") for k in sd):
        raise ConversionError("the backbone is not a ResNet (no conv1.weight / layer4.*); only ResNet/ResNeXt convert")
    blocks = 1 + max(int(m.group(2)) for k in sd if (m := _STAGE_KEY.match(k)) and m.group(1) == "3")
    if blocks not in _DEPTH_BY_LAYER3_BLOCKS:
        raise ConversionError(f"layer3 has {blocks} blocks; only ResNet-50 (6) and ResNet-101 (23) are supported")
    conv2 = sd["layer1.0.conv2.weight"]
    width, groups = conv2.shape[0], conv2.shape[0] // conv2.shape[1]
    stages, modulated, deform_groups = _dcn_stages(sd, config_text)
    return {
        "MODEL.BACKBONE.CONV_BODY": _CONV_BODIES[_DEPTH_BY_LAYER3_BLOCKS[blocks]],
        "MODEL.RESNETS.STRIDE_IN_1X1": bool(stride_in_1x1),
        "MODEL.RESNETS.NUM_GROUPS": int(groups),
        "MODEL.RESNETS.WIDTH_PER_GROUP": int(width // groups),
        "MODEL.RESNETS.STAGE_WITH_DCN": stages,
        "MODEL.RESNETS.WITH_MODULATED_DCN": bool(modulated),
        "MODEL.RESNETS.DEFORMABLE_GROUPS": int(deform_groups),
        "MODEL.RESNETS.BN_EPS": float(bn_eps),
    }


def backbone_to_ours(sd: StateDict, bn_eps: float) -> Tuple[StateDict, List[str]]:
    """mmdet ``backbone.*`` keys -> our ``backbone.body.*`` keys; returns (dict, dropped keys)."""
    dcn_stages = {int(m.group(1)) for k in sd if (m := _DCN_OFFSET.match(k))}
    out, dropped = OrderedDict(), []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            dropped.append(key)
            continue
        if key.endswith("running_var"):
            value = fold_bn_eps(value, bn_eps)
        m = _DCN_OFFSET.match(key)
        if m:
            key = f"layer{m.group(1)}.{m.group(2)}.conv2.offset.{m.group(3)}"
        elif key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        elif (m := _STAGE_KEY.match(key)) and int(m.group(1)) in dcn_stages and m.group(3) in ("conv2.weight", "conv2.bias"):
            key = f"layer{m.group(1)}.{m.group(2)}.conv2.conv.{m.group(3).split('.')[1]}"
        out[key] = value
    return out, dropped


def backbone_to_mmdet(sd: StateDict, bn_eps: float) -> StateDict:
    """Inverse of :func:`backbone_to_ours`, with ``num_batches_tracked`` = 0 after every ``running_var``."""
    out = OrderedDict()
    for key, value in sd.items():
        if key.startswith("stem."):
            key = key[len("stem."):]
        key = key.replace(".conv2.conv.", ".conv2.").replace(".conv2.offset.", ".conv2.conv_offset.")
        if key.endswith("running_var"):
            out[key] = unfold_bn_eps(value, bn_eps)
            out[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- neck
_NECK_KEY = re.compile(r"^(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$")
_FPN_KEY = re.compile(r"^(fpn_inner|fpn_layer)(\d+)\.(weight|bias)$|^top_blocks\.(p6|p7)\.(weight|bias)$")
# ResNet stage i (0-based) outputs 256 * 2**i channels.
_STAGE_CHANNELS = {256: 0, 512: 1, 1024: 2, 2048: 3}


def neck_overrides(sd: StateDict, config_text: str = "") -> Tuple[dict, int]:
    """(config values, start_level) of an mmdet FPN with P6/P7 extra convs (checkpoints.md §2.3)."""
    if re.search(r"add_extra_convs\s*=\s*'on_lateral'", config_text or ""):
        raise ConversionError("FPN add_extra_convs='on_lateral' (P6 from the C5 lateral) has no counterpart here")
    lateral = sorted(int(m.group(2)) for k in sd if (m := _NECK_KEY.match(k)) and m.group(1) == "lateral_convs")
    outputs = sorted({int(m.group(2)) for k in sd if (m := _NECK_KEY.match(k)) and m.group(1) == "fpn_convs"})
    if not lateral or len(outputs) != len(set(lateral)) + 2:
        raise ConversionError(
            f"expected an FPN with P6/P7 extra convs: {len(set(lateral))} laterals and {len(outputs)} output convs"
        )
    in_channels = sd["lateral_convs.0.conv.weight"].shape[1]
    if in_channels not in _STAGE_CHANNELS:
        raise ConversionError(f"first FPN lateral reads {in_channels} channels, not a ResNet stage output")
    out_channels = sd["fpn_convs.0.conv.weight"].shape[0]
    p6_in = sd[f"fpn_convs.{len(set(lateral))}.conv.weight"].shape[1]
    if p6_in not in (out_channels, 2048):
        raise ConversionError(f"the P6 conv reads {p6_in} channels: neither P5 ({out_channels}) nor C5 (2048)")
    return {
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS": int(out_channels),
        "MODEL.RETINANET.USE_C5": bool(p6_in == 2048),
    }, _STAGE_CHANNELS[in_channels]


def neck_to_ours(sd: StateDict, start_level: int) -> StateDict:
    """mmdet ``neck.*`` -> our ``backbone.fpn.*``: lateral/output m -> fpn_inner/fpn_layer
    ``m + start_level + 1``; the two extra convs -> top_blocks.p6/p7."""
    num_levels = len({k.split(".")[1] for k in sd if k.startswith("lateral_convs.")})
    out = OrderedDict()
    for key, value in sd.items():
        m = _NECK_KEY.match(key)
        if not m:
            raise ConversionError(f"unexpected FPN key neck.{key}")
        kind, index, param = m.group(1), int(m.group(2)), m.group(3)
        if kind == "fpn_convs" and index >= num_levels:
            out[f"top_blocks.{('p6', 'p7')[index - num_levels]}.{param}"] = value
        else:
            name = "fpn_inner" if kind == "lateral_convs" else "fpn_layer"
            out[f"{name}{index + start_level + 1}.{param}"] = value
    return out


def neck_to_mmdet(sd: StateDict) -> StateDict:
    """Inverse of :func:`neck_to_ours` (start_level from the lowest ``fpn_inner`` index)."""
    levels = sorted({int(m.group(2)) for k in sd if (m := _FPN_KEY.match(k)) and m.group(1)})
    out = OrderedDict()
    for key, value in sd.items():
        m = _FPN_KEY.match(key)
        if m.group(1):
            kind = "lateral_convs" if m.group(1) == "fpn_inner" else "fpn_convs"
            out[f"{kind}.{levels.index(int(m.group(2)))}.conv.{m.group(3)}"] = value
        else:
            out[f"fpn_convs.{len(levels) + ('p6', 'p7').index(m.group(4))}.conv.{m.group(5)}"] = value
    return out


# --------------------------------------------------------------------------- head towers
def _tower_key(mm: str, ours: str, key: str) -> Optional[str]:
    """``{mm}.n.conv.*`` / ``{mm}.n.gn.*`` -> ``{ours}.{3n}.*`` / ``{ours}.{3n+1}.*``
    (tower = [conv, GN, ReLU] per conv); a DCN conv's ``conv_offset`` -> ``offset``."""
    m = re.match(rf"^{mm}\.(\d+)\.(conv|gn)\.(.+)$", key)
    if not m:
        return None
    n, part, rest = int(m.group(1)), m.group(2), m.group(3)
    if part == "gn":
        return f"{ours}.{3 * n + 1}.{rest}"
    if rest.startswith("conv_offset."):
        return f"{ours}.{3 * n}.offset.{rest.split('.')[-1]}"
    return f"{ours}.{3 * n}.{rest}"


def tower_to_ours(sd: StateDict, towers: Dict[str, str]) -> Tuple[StateDict, List[str]]:
    """Map the keys of the mmdet towers ``{mm name: our name}`` (e.g. cls_convs -> cls_tower).

    A tower conv that has an offset conv is deformable: its own weight and bias
    go under ``.conv.``. Returns (mapped dict, keys of ``sd`` left unmapped).
    """
    out, rest = OrderedDict(), []
    dcn = {k.rsplit(".conv.conv_offset.", 1)[0] for k in sd if ".conv.conv_offset." in k}
    for key, value in sd.items():
        mm = key.split(".")[0]
        mapped = _tower_key(mm, towers[mm], key) if mm in towers else None
        if mapped is None:
            rest.append(key)
            continue
        if key.rsplit(".conv.", 1)[0] in dcn and key.endswith((".conv.weight", ".conv.bias")):
            mapped = mapped.rsplit(".", 1)[0] + ".conv." + key.rsplit(".", 1)[1]
        out[mapped] = value
    return out, rest


def tower_to_mmdet(sd: StateDict, towers: Dict[str, str]) -> Tuple[StateDict, List[str]]:
    """Inverse of :func:`tower_to_ours` for ``towers`` = {mm name: our name}."""
    ours_to_mm = {v: k for k, v in towers.items()}
    out, rest = OrderedDict(), []
    for key, value in sd.items():
        m = re.match(r"^(\w+)\.(\d+)\.(.+)$", key)
        if not m or m.group(1) not in ours_to_mm:
            rest.append(key)
            continue
        mm, index, tail = ours_to_mm[m.group(1)], int(m.group(2)), m.group(3)
        if index % 3 == 1:
            out[f"{mm}.{index // 3}.gn.{tail}"] = value
        elif index % 3 == 0:
            tail = tail.replace("conv.", "", 1) if tail.startswith("conv.") else tail
            tail = "conv_offset." + tail.split(".", 1)[1] if tail.startswith("offset.") else tail
            out[f"{mm}.{index // 3}.conv.{tail}"] = value
        else:
            raise ConversionError(f"tower key {key} is neither a conv (3n) nor a GN (3n + 1)")
    return out, rest


def scale_to_ours(value: Tensor) -> Tensor:
    """mmcv ``Scale.scale`` is 0-d; ours has shape [1]."""
    return value.reshape(1)


def scale_to_mmdet(value: Tensor) -> Tensor:
    return value.reshape(())


_SCALE_KEY = re.compile(r"^scales\.\d+\.scale$")


def map_predictors(sd: StateDict, keys, names: Dict[str, str], scale) -> Tuple[StateDict, List[str]]:
    """Head keys outside the towers: modules renamed by ``names`` (e.g. conv_cls -> cls_logits),
    ``scales.l.scale`` passed through ``scale`` (:func:`scale_to_ours` or :func:`scale_to_mmdet`).
    Returns (mapped dict, keys that are neither)."""
    out, unknown = OrderedDict(), []
    for key in keys:
        module, _, param = key.partition(".")
        if module in names:
            out[f"{names[module]}.{param}"] = sd[key]
        elif _SCALE_KEY.match(key):
            out[key] = scale(sd[key])
        else:
            unknown.append(key)
    return out, unknown


def rename_head(sd: StateDict, towers: Dict[str, str], predictors: Dict[str, str], to_ours: bool, method: str) -> StateDict:
    """A head's towers and predictors (both ``{mm name: our name}``) and scales, mmdet -> ours
    (``to_ours``) or back; any other key raises :class:`ConversionError` naming ``method``."""
    if to_ours:
        tower_map, names, scale, prefix = tower_to_ours, predictors, scale_to_ours, "bbox_head."
    else:
        tower_map, names, scale = tower_to_mmdet, {v: k for k, v in predictors.items()}, scale_to_mmdet
        prefix = "rpn.head."
    out, rest = tower_map(sd, towers)
    mapped, unknown = map_predictors(sd, rest, names, scale)
    if unknown:
        raise ConversionError(f"{method} head keys without a counterpart: {[prefix + k for k in unknown]}")
    out.update(mapped)
    return out
