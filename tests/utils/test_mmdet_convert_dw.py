"""mmdetection -> ours conversion of DW checkpoints (checkpoints.md §6 C1-C3, C12, C14, C15 for
DW): synthetic checkpoints with the key names and shapes of its §1.3-1.5 tables, strict
loading, key counts, the centre prior checked and dropped, round trips, and head outputs
equal to an independent forward of the mmdet-layout head."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from atss_core.modeling.dense_heads import build_dense_head
from atss_core.modeling.detector import build_detection_model
from atss_core.utils.mmdet_convert import HEAD_CONVERTERS, ConversionError, convert, detect_head, export
from tests.utils.mmdet_checkpoints import config_of, conv, load_tool, mmdet_fpn, mmdet_resnet, rand, ref_tower

DW_CONFIG = """
model = dict(type='FCOS', backbone=dict(type='ResNet', depth=50, style='pytorch', frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True),
    neck=dict(type='FPN', start_level=1, add_extra_convs='on_output', relu_before_extra_convs=True),
    bbox_head=dict(type='DWHead', num_classes=80, stacked_convs=4, feat_channels=256, reg_refine=True))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
"""
STRIDES = (8, 16, 32, 64, 128)
# variant -> (depth, refine, dcn), (mmdet keys, our keys, dropped), head parameters (checkpoints.md §1.6, §6 C1)
VARIANTS = {
    "r50_worefine": ((50, False, False), (379, 324, 55), 4920666),
    "r50_refine": ((50, True, False), (381, 326, 55), 4939106),
    "r50_dcn": ((50, True, True), (411, 356, 55), 5063576),
    "r101_worefine": ((101, False, False), (685, 579, 106), 4920666),
}


def mmdet_dw_head(g, refine=True, dcn=False, num_classes=80, channels=256, sigma=1.11):
    """checkpoints.md §1.5 DW table: 45 keys (+2 reg_offset, +4 DCNv2 offset convs)."""
    sd = {}
    for tower in ("cls_convs", "reg_convs"):
        for n in range(4):
            sd[f"{tower}.{n}.conv.weight"] = conv(g, channels, channels, 3)
            sd[f"{tower}.{n}.conv.bias"] = rand(g, channels, scale=0.1)
            if dcn and n == 3:
                sd[f"{tower}.{n}.conv.conv_offset.weight"] = conv(g, 27, channels, 3) * 0.1
                sd[f"{tower}.{n}.conv.conv_offset.bias"] = rand(g, 27, scale=0.1)
            sd[f"{tower}.{n}.gn.weight"] = 0.5 + torch.rand(channels, generator=g)
            sd[f"{tower}.{n}.gn.bias"] = rand(g, channels, scale=0.1)
    predictors = (("conv_cls", num_classes), ("conv_reg", 4), ("conv_centerness", 1)) + (("reg_offset", 8),) * refine
    for name, cout in predictors:
        sd[f"{name}.weight"] = conv(g, cout, channels, 3)
        sd[f"{name}.bias"] = rand(g, cout, scale=0.1)
    sd["conv_reg.bias"] += 2.0  # distances of a few strides, so that the refinement samples inside the map
    for level in range(5):
        sd[f"scales.{level}.scale"] = torch.tensor(0.6 + 0.1 * level)  # 0-d, as mmcv's Scale
    sd["center_prior.mean"] = torch.zeros(num_classes, 2)
    sd["center_prior.sigma"] = torch.full((num_classes, 2), sigma)
    return sd


def mmdet_checkpoint(variant, seed=0, **head_kw):
    (depth, refine, dcn), _, _ = VARIANTS[variant]
    g = torch.Generator().manual_seed(seed)
    parts = {
        "backbone.": mmdet_resnet(g, depth, dcn_rows=27 if dcn else 0),
        "neck.": mmdet_fpn(g),
        "bbox_head.": mmdet_dw_head(g, refine, dcn, **head_kw),
    }
    sd = {prefix + k: v for prefix, part in parts.items() for k, v in part.items()}
    config = DW_CONFIG.replace("depth=50", f"depth={depth}").replace("reg_refine=True", f"reg_refine={refine}")
    return sd, {"config": config}


class _Converted(dict):
    """variant -> (mmdet state dict, meta, convert(...)), built on first use."""

    def __missing__(self, variant):
        sd, meta = mmdet_checkpoint(variant)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # C15: the default prior converts without any message
            self[variant] = sd, meta, convert(sd, meta)
        return self[variant]


@pytest.fixture(scope="module")
def converted():
    return _Converted()


# ----------------------------------------------------------------------------- C1, C14: exact key sets, strict load
@pytest.mark.parametrize("variant", VARIANTS)
def test_key_counts_and_strict_load(variant, converted):
    sd_mm, _, (sd, overrides, report) = converted[variant]
    counts, head_params = VARIANTS[variant][1:]
    assert (len(sd_mm), len(sd), len(report.dropped)) == counts
    assert report.head == "DW" == detect_head([k[len("bbox_head."):] for k in sd_mm if k.startswith("bbox_head.")])
    assert sorted(k for k in report.dropped if not k.endswith("num_batches_tracked")) == [
        "bbox_head.center_prior.mean", "bbox_head.center_prior.sigma",
    ]
    with torch.device("meta"):  # keys and shapes only; assign=True swaps in the converted tensors
        model = build_detection_model(config_of(overrides))
    ours = model.state_dict()
    assert set(sd) == set(ours) and all(sd[k].shape == ours[k].shape for k in sd)
    result = model.load_state_dict(sd, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(v.numel() for k, v in sd.items() if k.startswith("rpn.head.")) == head_params


def test_overrides(converted):
    o = converted["r50_dcn"][2][1]
    assert o["MODEL.DW_ON"] is True and o["MODEL.DW.NUM_CLASSES"] == 81 and o["MODEL.DW.NUM_CONVS"] == 4
    assert o["MODEL.DW.CONV_BIAS"] is True and o["MODEL.DW.REG_REFINE"] is True
    assert o["MODEL.DW.USE_DCN_IN_TOWER"] is True
    assert o["MODEL.RESNETS.STAGE_WITH_DCN"] == (False, True, True, True) and o["MODEL.RESNETS.WITH_MODULATED_DCN"]
    assert o["MODEL.RESNETS.STRIDE_IN_1X1"] is False and o["MODEL.RETINANET.USE_C5"] is False
    assert o["INPUT.TO_BGR255"] is False and o["INPUT.PIXEL_MEAN"] == pytest.approx([0.485, 0.456, 0.406])
    assert not any(k.startswith("MODEL.DW.PRIOR") for k in o)
    plain = converted["r50_worefine"][2][1]
    assert plain["MODEL.DW.REG_REFINE"] is False and plain["MODEL.DW.USE_DCN_IN_TOWER"] is False
    assert converted["r101_worefine"][2][1]["MODEL.BACKBONE.CONV_BODY"] == "R-101-FPN-RETINANET"


# ----------------------------------------------------------------------------- C2: values
def test_head_values_are_copied_bitwise(converted):
    sd_mm, _, (sd, _, _) = converted["r50_dcn"]
    pairs = {
        "centerness.weight": "conv_centerness.weight",
        "centerness.bias": "conv_centerness.bias",
        "reg_offset.weight": "reg_offset.weight",
        "bbox_pred.bias": "conv_reg.bias",
        "cls_logits.weight": "conv_cls.weight",  # C13: rows never permuted
        "cls_tower.3.bias": "cls_convs.1.conv.bias",
        "bbox_tower.7.weight": "reg_convs.2.gn.weight",
        "cls_tower.9.conv.weight": "cls_convs.3.conv.weight",
        "bbox_tower.9.conv.bias": "reg_convs.3.conv.bias",
        "bbox_tower.9.offset.weight": "reg_convs.3.conv.conv_offset.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(sd["rpn.head." + ours], sd_mm["bbox_head." + theirs]), ours
    assert sd["rpn.head.scales.3.scale"].shape == (1,)
    assert sd["rpn.head.scales.3.scale"].item() == sd_mm["bbox_head.scales.3.scale"].item()


# ----------------------------------------------------------------------------- C15: centre prior
def _head_only(**kw):
    return mmdet_dw_head(torch.Generator().manual_seed(5), channels=32, **kw)


def test_a_non_default_uniform_prior_warns_and_sets_theconfig_of():
    with pytest.warns(UserWarning, match="center_prior.sigma"):
        sd, overrides, dropped = HEAD_CONVERTERS["DW"].to_ours(_head_only(sigma=1.5))
    assert overrides["MODEL.DW.PRIOR_SIGMA"] == 1.5 and "MODEL.DW.PRIOR_MEAN" not in overrides
    assert dropped == ["center_prior.mean", "center_prior.sigma"] and not any("prior" in k for k in sd)


def test_per_class_priors_warn_and_are_dropped():
    head = _head_only()
    head["center_prior.mean"][3, 1] = 0.2
    with pytest.warns(UserWarning, match="per-class"):
        overrides = HEAD_CONVERTERS["DW"].to_ours(head)[1]
    assert "MODEL.DW.PRIOR_MEAN" not in overrides


def test_missing_prior_half_and_unknown_keys_fail(converted):
    sd, meta, _ = converted["r50_refine"]
    with pytest.raises(ConversionError, match="bbox_head.foo.weight"):
        convert({**sd, "bbox_head.foo.weight": torch.zeros(1)}, meta)
    with pytest.raises(ConversionError, match="center_prior.sigma"):
        convert({k: v for k, v in sd.items() if k != "bbox_head.center_prior.sigma"}, meta)


# ----------------------------------------------------------------------------- C12: round trips
@pytest.mark.parametrize("variant", ["r50_refine", "r50_dcn"])
def test_round_trips_regenerate_the_prior(variant, converted):
    sd_mm, meta, (sd, _, _) = converted[variant]
    back = export(sd, "DW")
    assert set(back) == set(sd_mm)
    for k, v in sd_mm.items():
        if k.endswith("num_batches_tracked"):
            assert back[k].item() == 0
        elif k.endswith("running_var"):
            torch.testing.assert_close(back[k], v, rtol=1e-6, atol=0)
        else:
            assert back[k].shape == v.shape and torch.equal(back[k], v), k
    assert back["bbox_head.center_prior.sigma"].dtype == torch.float32
    assert back["bbox_head.center_prior.sigma"][0, 0].item() == pytest.approx(1.1100000143, abs=1e-10)
    again = convert(back, meta)[0]
    assert list(again) == list(sd)
    assert all(torch.equal(again[k], sd[k]) for k in sd if not k.endswith("running_var"))


# ----------------------------------------------------------------------------- function: same head outputs
def _ref_dw_head(feats, sd, refine, dcn):
    """strongwolf/DW DWHead.forward_single per level, written from dw.md §2.3-2.4 with
    torchvision's deform_conv2d as the sampler."""
    out = ([], [], [])
    for level, (x, s) in enumerate(zip(feats, STRIDES)):
        cls_feat, reg_feat = ref_tower(x, sd, "cls_convs", dcn), ref_tower(x, sd, "reg_convs", dcn)
        out[0].append(F.conv2d(cls_feat, sd["conv_cls.weight"], sd["conv_cls.bias"], padding=1))
        out[2].append(F.conv2d(reg_feat, sd["conv_centerness.weight"], sd["conv_centerness.bias"], padding=1))
        raw = F.conv2d(reg_feat, sd["conv_reg.weight"], sd["conv_reg.bias"], padding=1)
        d = F.relu(raw * sd[f"scales.{level}.scale"]) * s
        if refine:
            o = F.conv2d(reg_feat, sd["reg_offset.weight"], sd["reg_offset.bias"], padding=1)
            h, w = d.shape[-2:]
            ys, xs = torch.meshgrid(
                (torch.arange(h, dtype=d.dtype) + 0.5) * s, (torch.arange(w, dtype=d.dtype) + 0.5) * s, indexing="ij"
            )
            boxes = torch.stack((xs - d[:, 0], ys - d[:, 1], xs + d[:, 2], ys + d[:, 3]), 1)
            dd = d / s
            zero = torch.zeros_like(dd[:, 0])
            offset = o + torch.stack((zero, -dd[:, 0], -dd[:, 1], zero, zero, dd[:, 2], dd[:, 3], zero), 1)
            boxes = torchvision.ops.deform_conv2d(boxes, offset, torch.ones(4, 1, 1, 1, dtype=d.dtype))
            d = torch.stack((xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys), 1).relu()
        out[1].append(d)
    return out


@pytest.mark.parametrize("variant", ["r50_worefine", "r50_refine", "r50_dcn"])
def test_converted_head_computes_the_mmdet_head_outputs(variant, converted):
    sd_mm, _, (sd, overrides, _) = converted[variant]
    refine, dcn = VARIANTS[variant][0][1:]
    head = build_dense_head(config_of(overrides), 256).head.double()
    head.load_state_dict({k[len("rpn.head."):]: v for k, v in sd.items() if k.startswith("rpn.head.")}, strict=True)
    ref_sd = {k[len("bbox_head."):]: v.double() for k, v in sd_mm.items() if k.startswith("bbox_head.")}
    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(1, 256, h, h + 2, generator=g, dtype=torch.float64) for h in (6, 3, 2, 1, 1)]
    with torch.no_grad():
        ours, ref = head(feats), _ref_dw_head(feats, ref_sd, refine, dcn)
    for kind, (a_levels, b_levels) in enumerate(zip(ours, ref)):
        for a, b in zip(a_levels, b_levels):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-10 * b.abs().max().clamp(min=1e-30), kind
    if refine:  # the refinement did move the boxes
        unrefined = _ref_dw_head(feats, ref_sd, False, dcn)[1]
        assert all((a - b).abs().max() > 1 for a, b in zip(ours[1], unrefined))


# ----------------------------------------------------------------------------- the shared tool
def test_convert_checkpoint_tool_writes_a_dw_checkpoint(converted, tmp_path, capsys):
    tool = load_tool()
    sd_mm, meta, (sd, overrides, _) = converted["r50_refine"]
    src, out = tmp_path / "dw_mmdet.pth", tmp_path / "dw.pth"
    torch.save({"meta": meta, "state_dict": sd_mm}, src)
    tool.main([str(src), str(out)])
    assert "DW detector: 381 keys -> 326 (55 dropped: 53 BN counters, bbox_head.center_prior.*)" in (
        capsys.readouterr().out
    )
    data = torch.load(out, weights_only=True)
    assert data["meta"]["head"] == "DW" and data["meta"]["cfg_overrides"] == overrides
    assert list(data["model"]) == list(sd) and all(torch.equal(data["model"][k], v) for k, v in sd.items())
