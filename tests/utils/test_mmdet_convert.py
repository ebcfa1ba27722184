"""mmdetection -> ours conversion of DSLA checkpoints: checkpoints.md §6 C1-C3, C10, C12-C14,
on synthetic checkpoints whose key names and shapes follow its §1 tables, plus the
functional check that the converted detector computes what the mmdet one does."""
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision

from atss_core.modeling.detector import build_detection_model
from atss_core.utils.mmdet_convert import ConversionError, as_opts, convert, detect_head, export
from atss_core.utils.mmdet_convert.common import neck_to_ours
from tests.utils.mmdet_checkpoints import config_of, conv, mmdet_fpn, mmdet_resnet, rand, ref_tower

R50_CONFIG = """
model = dict(type='DSLA', backbone=dict(type='ResNet', depth=50, style='caffe'),
    neck=dict(type='FPN', add_extra_convs=True, extra_convs_on_inputs=False, relu_before_extra_convs=True))
img_norm_cfg = dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], to_rgb=False)
"""
R101_CONFIG = """
model = dict(backbone=dict(type='ResNet', depth=101, style='pytorch',
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False), stage_with_dcn=(False, True, True, True)),
    bbox_head=dict(type='SmoothedLabelLearningHead', norm_on_bbox=True, center_sampling=True, center_sample_radius=1.5))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
"""
COCO_FIRST_LAST = ("person", "toothbrush")


# ----------------------------------------------------------------------------- synthetic mmdet checkpoints
def mmdet_dsla_head(g, tricks=False, num_classes=80, channels=256):
    """checkpoints.md §1.5 DSLA table: 33 keys (R-50), 45 (R-101 DCN: tower bias + DCNv2 item 3)."""
    sd = {}
    for tower in ("cls_convs", "reg_convs"):
        for n in range(4):
            sd[f"{tower}.{n}.conv.weight"] = conv(g, channels, channels, 3)
            if tricks:
                sd[f"{tower}.{n}.conv.bias"] = rand(g, channels, scale=0.1)
            if tricks and n == 3:
                sd[f"{tower}.{n}.conv.conv_offset.weight"] = conv(g, 27, channels, 3)
                sd[f"{tower}.{n}.conv.conv_offset.bias"] = rand(g, 27)
            sd[f"{tower}.{n}.gn.weight"] = 0.5 + torch.rand(channels, generator=g)
            sd[f"{tower}.{n}.gn.bias"] = rand(g, channels, scale=0.1)
    sd["conv_cls.weight"] = conv(g, num_classes, channels, 3)
    sd["conv_cls.bias"] = rand(g, num_classes)
    sd["conv_reg.weight"] = conv(g, 4, channels, 3)
    sd["conv_reg.bias"] = rand(g, 4, scale=0.1)
    for level in range(5):
        sd[f"scales.{level}.scale"] = torch.tensor(0.5 + 0.1 * level)  # 0-d, as mmcv's Scale
    return sd


def mmdet_checkpoint(variant, seed=0):
    g = torch.Generator().manual_seed(seed)
    r101 = variant == "r101_dcn"
    parts = {
        "backbone.": mmdet_resnet(g, 101 if r101 else 50, dcn_rows=18 if r101 else 0),
        "neck.": mmdet_fpn(g),
        "bbox_head.": mmdet_dsla_head(g, tricks=r101),
    }
    sd = {prefix + k: v for prefix, part in parts.items() for k, v in part.items()}
    meta = {"config": R101_CONFIG if r101 else R50_CONFIG, "CLASSES": COCO_FIRST_LAST[:1] + ("x",) * 78 + COCO_FIRST_LAST[1:]}
    return sd, meta


def _model(overrides):
    return build_detection_model(config_of(overrides))


@pytest.fixture(scope="module")
def r50():
    sd, meta = mmdet_checkpoint("r50")
    return sd, meta, convert(sd, meta)


@pytest.fixture(scope="module")
def r101():
    sd, meta = mmdet_checkpoint("r101_dcn")
    return sd, meta, convert(sd, meta)


# ----------------------------------------------------------------------------- C1, C14: exact key sets, strict load
@pytest.mark.parametrize("variant,counts", [("r50", (367, 314, 53)), ("r101_dcn", (745, 641, 104))])
def test_key_sets_match_our_model_and_load_strictly(variant, counts, r50, r101):
    sd_mm, _, (sd, overrides, report) = r50 if variant == "r50" else r101
    assert (len(sd_mm), len(sd), len(report.dropped)) == counts
    assert all(k.endswith("num_batches_tracked") for k in report.dropped)
    model = _model(overrides)
    ours = model.state_dict()
    assert set(sd) == set(ours)
    assert all(sd[k].shape == ours[k].shape for k in sd)
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_overrides_of_the_released_checkpoints(r50, r101):
    o50, o101 = r50[2][1], r101[2][1]
    assert o50["MODEL.DSLA_ON"] and o50["MODEL.BACKBONE.CONV_BODY"] == "R-50-FPN-RETINANET"
    assert o50["MODEL.RESNETS.STRIDE_IN_1X1"] is True and o50["MODEL.RETINANET.USE_C5"] is False
    assert o50["MODEL.DSLA.CONV_BIAS"] is False and o50["MODEL.DSLA.USE_DCN_IN_TOWER"] is False
    assert o50["MODEL.DSLA.NUM_CLASSES"] == 81 and o50["MODEL.DSLA.NORM_REG_TARGETS"] is False
    assert o50["MODEL.RESNETS.STAGE_WITH_DCN"] == (False,) * 4
    assert o101["MODEL.BACKBONE.CONV_BODY"] == "R-101-FPN-RETINANET"
    assert o101["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert o101["MODEL.RESNETS.STAGE_WITH_DCN"] == (False, True, True, True)
    assert o101["MODEL.RESNETS.WITH_MODULATED_DCN"] is False and o101["MODEL.RESNETS.DEFORMABLE_GROUPS"] == 1
    assert o101["MODEL.DSLA.CONV_BIAS"] and o101["MODEL.DSLA.USE_DCN_IN_TOWER"] and o101["MODEL.DSLA.NORM_REG_TARGETS"]
    assert o101["MODEL.DSLA.CENTER_SAMPLING_RADIUS"] == 1.5


# ----------------------------------------------------------------------------- C2: values
def test_values_are_copied_bitwise_except_bn_variance_and_scale(r50):
    sd_mm, _, (sd, _, _) = r50
    assert torch.equal(sd["backbone.body.stem.conv1.weight"], sd_mm["backbone.conv1.weight"])
    assert torch.equal(sd["backbone.body.layer3.5.bn2.running_var"], sd_mm["backbone.layer3.5.bn2.running_var"] + 1e-5)
    assert torch.equal(sd["backbone.body.stem.bn1.running_mean"], sd_mm["backbone.bn1.running_mean"])
    assert torch.equal(sd["backbone.fpn.fpn_inner2.bias"], sd_mm["neck.lateral_convs.0.conv.bias"])
    assert torch.equal(sd["backbone.fpn.fpn_layer4.weight"], sd_mm["neck.fpn_convs.2.conv.weight"])
    assert torch.equal(sd["backbone.fpn.top_blocks.p6.weight"], sd_mm["neck.fpn_convs.3.conv.weight"])
    assert torch.equal(sd["backbone.fpn.top_blocks.p7.bias"], sd_mm["neck.fpn_convs.4.conv.bias"])
    assert torch.equal(sd["rpn.head.cls_tower.3.weight"], sd_mm["bbox_head.cls_convs.1.conv.weight"])
    assert torch.equal(sd["rpn.head.bbox_tower.10.bias"], sd_mm["bbox_head.reg_convs.3.gn.bias"])
    # C13: class rows are never permuted.
    assert torch.equal(sd["rpn.head.cls_logits.weight"], sd_mm["bbox_head.conv_cls.weight"])
    assert sd["rpn.head.scales.2.scale"].shape == (1,)
    assert sd["rpn.head.scales.2.scale"].item() == sd_mm["bbox_head.scales.2.scale"].item()


def test_dcn_keys_map_onto_dfconv(r101):
    sd_mm, _, (sd, _, _) = r101
    assert torch.equal(sd["backbone.body.layer3.7.conv2.conv.weight"], sd_mm["backbone.layer3.7.conv2.weight"])
    assert torch.equal(sd["backbone.body.layer2.0.conv2.offset.bias"], sd_mm["backbone.layer2.0.conv2.conv_offset.bias"])
    assert torch.equal(sd["rpn.head.cls_tower.9.conv.weight"], sd_mm["bbox_head.cls_convs.3.conv.weight"])
    assert torch.equal(sd["rpn.head.bbox_tower.9.conv.bias"], sd_mm["bbox_head.reg_convs.3.conv.bias"])
    assert torch.equal(sd["rpn.head.cls_tower.9.offset.weight"], sd_mm["bbox_head.cls_convs.3.conv.conv_offset.weight"])


def test_p6_source_from_shape_and_start_level_formula():
    g = torch.Generator().manual_seed(1)
    sd, meta = mmdet_checkpoint("r50")
    sd.update({"neck." + k: v for k, v in mmdet_fpn(g, p6_in=2048).items()})
    assert convert(sd, meta)[1]["MODEL.RETINANET.USE_C5"] is True
    assert "fpn_inner1.weight" in neck_to_ours({"lateral_convs.0.conv.weight": torch.zeros(1)}, start_level=0)
    with pytest.raises(ConversionError, match="on_lateral"):
        convert(sd, {"config": R50_CONFIG + "neck=dict(add_extra_convs='on_lateral')"})


def test_legacy_spellings_are_accepted(r101):
    sd_mm, meta, (ref, _, _) = r101
    legacy = {
        k.replace("conv2.conv_offset.", "conv2_offset.").replace("conv.conv_offset.", "conv_offset."): v
        for k, v in sd_mm.items()
    }
    legacy = {("module." + k).replace("bbox_head.conv_cls.", "bbox_head.fcos_cls."): v for k, v in legacy.items()}
    sd = convert(legacy, meta)[0]
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in sd)


# ----------------------------------------------------------------------------- C3: detection from keys
def test_head_detection_rules():
    dsla = ["cls_convs.0.conv.weight", "conv_cls.weight", "conv_reg.weight", "scales.0.scale"]
    assert detect_head(dsla) == "DSLA"
    assert detect_head(dsla + ["conv_centerness.weight", "center_prior.mean"]) == "DW"
    assert detect_head(dsla + ["conv_centerness.weight", "centerness_convs.0.conv.weight"]) == "O2F"
    with pytest.raises(ConversionError, match="FCOS"):
        detect_head(dsla + ["conv_centerness.weight"])


def test_depth_classes_and_dcn_kind_from_keys():
    g = torch.Generator().manual_seed(2)
    sd, meta = mmdet_checkpoint("r50")
    head = mmdet_dsla_head(g, num_classes=1, channels=256)
    sd.update({"bbox_head." + k: v for k, v in head.items()})
    meta = {"config": R50_CONFIG}
    assert convert(sd, meta)[1]["MODEL.DSLA.NUM_CLASSES"] == 2
    with pytest.raises(ConversionError, match="CLASSES"):
        convert(sd, {"config": R50_CONFIG, "CLASSES": ("a", "b")})
    v2 = {"backbone." + k: v for k, v in mmdet_resnet(g, 50, dcn_rows=27).items()}
    overrides = convert({**sd, **v2}, meta)[1]
    assert overrides["MODEL.RESNETS.WITH_MODULATED_DCN"] is True
    assert overrides["MODEL.RESNETS.STAGE_WITH_DCN"] == (False, True, True, True)
    assert overrides["MODEL.BACKBONE.CONV_BODY"] == "R-50-FPN-RETINANET"


def test_unknown_keys_and_missing_style_fail(r50):
    sd_mm, meta, _ = r50
    with pytest.raises(ConversionError, match="bbox_head.foo.weight"):
        convert({**sd_mm, "bbox_head.foo.weight": torch.zeros(1)}, meta)
    with pytest.raises(ConversionError, match="outside"):
        convert({**sd_mm, "ema.conv1.weight": torch.zeros(1)}, meta)
    with pytest.raises(ConversionError, match="style"):
        convert(sd_mm, {})
    with pytest.raises(ConversionError, match="contradicts"):
        convert(sd_mm, meta, style="pytorch")
    sd, overrides, report = convert(sd_mm, {}, style="caffe")
    assert overrides["INPUT.TO_BGR255"] is True and report.notes


# ----------------------------------------------------------------------------- C10: input normalisation
def test_input_normalisation_overrides(r50, r101):
    assert (200 - 123.675) / 58.395 == pytest.approx((200 / 255 - 0.485) / 0.229, abs=1e-9)
    o50, o101 = r50[2][1], r101[2][1]
    assert o50["INPUT.TO_BGR255"] is True
    assert o50["INPUT.PIXEL_MEAN"] == [102.9801, 115.9465, 122.7717] and o50["INPUT.PIXEL_STD"] == [1.0, 1.0, 1.0]
    assert o101["INPUT.TO_BGR255"] is False
    assert o101["INPUT.PIXEL_MEAN"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-12)
    assert o101["INPUT.PIXEL_STD"] == pytest.approx([0.229, 0.224, 0.225], abs=1e-12)


# ----------------------------------------------------------------------------- C12: round trip
@pytest.mark.parametrize("variant", ["r50", "r101_dcn"])
def test_round_trips(variant, r50, r101):
    sd_mm, meta, (sd, _, report) = r50 if variant == "r50" else r101
    back = export(sd, "DSLA")
    assert set(back) == set(sd_mm)
    for k, v in sd_mm.items():
        if k.endswith("num_batches_tracked"):
            assert back[k].dtype == torch.int64 and back[k].item() == 0
        elif k.endswith("running_var"):
            torch.testing.assert_close(back[k], v, rtol=1e-6, atol=0)
        else:
            assert back[k].shape == v.shape and torch.equal(back[k], v), k
    again = convert(back, meta)[0]
    assert list(again) == list(sd)
    for k in sd:
        if k.endswith("running_var"):
            torch.testing.assert_close(again[k], sd[k], rtol=1e-6, atol=0)
        else:
            assert torch.equal(again[k], sd[k]), k
    mapped = [k for k in sd_mm if not k.endswith("num_batches_tracked")]
    assert sum(sd_mm[k].numel() for k in mapped) == sum(v.numel() for v in sd.values())
    if variant == "r50":
        assert sum(v.numel() for k, v in sd.items() if k.startswith("rpn.head.")) == 4916313


# ----------------------------------------------------------------------------- function: same outputs
def _ref_head(feats, sd, tricks):
    """mmdet DSLAHead.forward_single per level: cls logits and exp(scale * reg) (or relu, tricks)."""
    logits, boxes = [], []
    for level, x in enumerate(feats):
        logits.append(F.conv2d(ref_tower(x, sd, "cls_convs", tricks), sd["conv_cls.weight"], sd["conv_cls.bias"], padding=1))
        reg = F.conv2d(ref_tower(x, sd, "reg_convs", tricks), sd["conv_reg.weight"], sd["conv_reg.bias"], padding=1)
        reg = reg * sd[f"scales.{level}.scale"]
        boxes.append(reg.relu() if tricks else reg.exp())
    return logits, boxes


def _ref_fpn(c3, c4, c5, sd):
    """mmdet FPN, start_level 1, 'on_output' extra convs, ReLU before the P7 conv only."""
    lat = [F.conv2d(c, sd[f"lateral_convs.{m}.conv.weight"], sd[f"lateral_convs.{m}.conv.bias"]) for m, c in enumerate((c3, c4, c5))]
    for m in (2, 1):
        lat[m - 1] = lat[m - 1] + F.interpolate(lat[m], size=lat[m - 1].shape[-2:], mode="nearest")
    outs = [F.conv2d(x, sd[f"fpn_convs.{m}.conv.weight"], sd[f"fpn_convs.{m}.conv.bias"], padding=1) for m, x in enumerate(lat)]
    outs.append(F.conv2d(outs[-1], sd["fpn_convs.3.conv.weight"], sd["fpn_convs.3.conv.bias"], stride=2, padding=1))
    outs.append(F.conv2d(outs[-1].relu(), sd["fpn_convs.4.conv.weight"], sd["fpn_convs.4.conv.bias"], stride=2, padding=1))
    return outs


def _part(sd, prefix):
    return {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}


def test_converted_r50_detector_computes_the_mmdet_features_and_head_outputs(r50):
    """Caffe-style torchvision ResNet (eval BN, eps 1e-5) + reference FPN and head vs our model."""
    sd_mm, meta, _ = r50
    # float64 source, so that the +1e-5 variance fold is exact to 1e-16.
    sd_mm = {k: v.double() if v.is_floating_point() else v for k, v in sd_mm.items()}
    sd, overrides, _ = convert(sd_mm, meta)
    model = _model(overrides).double().eval()
    model.load_state_dict(sd, strict=True)
    ref = torchvision.models.resnet50().double().eval()
    for layer in (ref.layer2, ref.layer3, ref.layer4):  # caffe: stride in the 1x1
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    ref.load_state_dict({**_part(sd_mm, "backbone."), "fc.weight": ref.fc.weight, "fc.bias": ref.fc.bias})
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        c2 = ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))
        c3 = ref.layer2(c2)
        c4 = ref.layer3(c3)
        ref_feats = _ref_fpn(c3, c4, ref.layer4(c4), _part(sd_mm, "neck."))
        feats = model.backbone(x)
        ref_out = _ref_head(ref_feats, _part(sd_mm, "bbox_head."), tricks=False)
        out = model.rpn.head(feats)
    for a, b in zip(feats, ref_feats):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    for ours, theirs in zip(out[:2], ref_out):
        for a, b in zip(ours, theirs):
            assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    assert out[2] == []  # no centerness branch


def test_converted_dcn_head_computes_the_mmdet_head_outputs(r101):
    sd_mm, _, (sd, overrides, _) = r101
    model = _model(overrides)
    head = model.rpn.head.double()
    head.load_state_dict(_part(sd, "rpn.head."), strict=True)
    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(1, 256, s, s + 1, generator=g, dtype=torch.float64) for s in (6, 3, 2, 1, 1)]
    with torch.no_grad():
        out = head(feats)
        ref = _ref_head(feats, _part(sd_mm, "bbox_head."), tricks=True)
    for ours, theirs in zip(out[:2], ref):
        for a, b in zip(ours, theirs):
            assert (a - b).abs().max() <= 1e-10 * b.abs().max().clamp(min=1e-30)


def test_overrides_print_as_command_line_options(r101):
    opts = as_opts(r101[2][1])
    pairs = dict(zip(opts[::2], opts[1::2]))
    assert pairs["MODEL.RESNETS.STAGE_WITH_DCN"] == "(False, True, True, True)"
    assert pairs["MODEL.BACKBONE.CONV_BODY"] == "R-101-FPN-RETINANET"
    assert re.fullmatch(r"\[0\.485, 0\.456, 0\.406\]", pairs["INPUT.PIXEL_MEAN"])
