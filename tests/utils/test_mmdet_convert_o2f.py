"""mmdetection -> ours conversion of O2F checkpoints (checkpoints.md §6 C1-C3, C12, C14 for O2F):
synthetic checkpoints with the key names and shapes of its §1.3-1.5 tables, strict loading,
key counts, round trips, and head outputs equal to an independent forward of the mmdet head."""
import math

import pytest
import torch
import torch.nn.functional as F

from atss_core.modeling.dense_heads import build_dense_head
from atss_core.modeling.detector import build_detection_model
from atss_core.utils.mmdet_convert import ConversionError, convert, export
from tests.utils.mmdet_checkpoints import config_of, load_tool, mmdet_fpn, mmdet_resnet, ref_tower

O2F_CONFIG = """
model = dict(type='FCOS', backbone=dict(type='ResNet', depth=50, style='pytorch', frozen_stages=1),
    neck=dict(type='FPN', start_level=1, add_extra_convs='on_output', relu_before_extra_convs=True),
    bbox_head=dict(type='O2FHead', num_classes=80, stacked_convs=4, feat_channels=256, conv_bias=True,
        norm_on_bbox=True, center_sampling=True, center_sample_radius=1.5, poto_alpha=0.8, o2f_topk=7,
        max_epoch=12),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6), max_per_img=100,
        with_nms=False))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
"""
CROWDHUMAN = O2F_CONFIG
for _old, _new in (("num_classes=80", "num_classes=1"), ("o2f_topk=7", "o2f_topk=4"), ("max_epoch=12", "max_epoch=50"),
                   ("nms_pre=1000", "nms_pre=5000"), ("max_per_img=100", "max_per_img=500")):
    CROWDHUMAN = CROWDHUMAN.replace(_old, _new)
STRIDES = (8, 16, 32, 64, 128)


def mmdet_o2f_head(g, num_classes=80, channels=256, obj_channels=64):
    """checkpoints.md §1.5 O2F table: 55 keys (ConvModules [conv (bias), gn], 0-d scales)."""
    sd = {}

    def module(name, cin, cout):
        sd[f"{name}.conv.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(1 / (9 * cin))
        sd[f"{name}.conv.bias"] = torch.randn(cout, generator=g) * 0.1
        sd[f"{name}.gn.weight"] = 0.5 + torch.rand(cout, generator=g)
        sd[f"{name}.gn.bias"] = torch.randn(cout, generator=g) * 0.1

    for n in range(4):
        module(f"cls_convs.{n}", channels, channels)
        module(f"reg_convs.{n}", channels, channels)
    for n in range(3):
        module(f"centerness_convs.{n}", channels if n == 0 else obj_channels, obj_channels)
    predictors = (("conv_cls", channels, num_classes), ("conv_reg", channels, 4), ("conv_centerness", obj_channels, 1))
    for name, cin, cout in predictors:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(1 / (9 * cin))
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1
    for level in range(5):
        sd[f"scales.{level}.scale"] = torch.tensor(0.8 + 0.1 * level)
    return sd


def mmdet_checkpoint(num_classes=80, depth=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    parts = {"backbone.": mmdet_resnet(g, depth), "neck.": mmdet_fpn(g), "bbox_head.": mmdet_o2f_head(g, num_classes)}
    sd = {prefix + k: v for prefix, part in parts.items() for k, v in part.items()}
    config = CROWDHUMAN if num_classes == 1 else O2F_CONFIG.replace("depth=50", f"depth={depth}")
    return sd, {"config": config}


@pytest.fixture(scope="module")
def r50():
    sd, meta = mmdet_checkpoint()
    return sd, meta, convert(sd, meta)


# ----------------------------------------------------------------------------- C1, C14: key sets, strict load
def test_r50_keys_match_our_model_and_load_strictly(r50):
    sd_mm, _, (sd, overrides, report) = r50
    assert report.head == "O2F"
    assert (len(sd_mm), len(sd), len(report.dropped)) == (389, 336, 53)
    assert sum(k.startswith("bbox_head.") for k in sd_mm) == 55
    assert all(k.endswith("num_batches_tracked") for k in report.dropped)
    model = build_detection_model(config_of(overrides))
    assert set(sd) == set(model.state_dict())
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(v.numel() for k, v in sd.items() if k.startswith("rpn.head.")) == 5140698


@pytest.mark.parametrize("num_classes, depth, counts", [(1, 50, (389, 336, 53)), (80, 101, (695, 591, 104))])
def test_crowdhuman_and_r101_key_counts(num_classes, depth, counts):
    sd_mm, meta = mmdet_checkpoint(num_classes, depth)
    sd, overrides, report = convert(sd_mm, meta)
    assert (len(sd_mm), len(sd), len(report.dropped)) == counts
    with torch.device("meta"):
        ours = build_detection_model(config_of(overrides)).state_dict()
    assert set(sd) == set(ours) and all(sd[k].shape == ours[k].shape for k in sd)
    if num_classes == 1:
        assert overrides["MODEL.O2F.NUM_CLASSES"] == 2 and overrides["MODEL.O2F.TOPK"] == 4
        assert overrides["TEST.DETECTIONS_PER_IMG"] == 500 and overrides["MODEL.O2F.PRE_NMS_TOP_N"] == 5000
        assert overrides["MODEL.O2F.SCHEDULE_EPOCHS"] == 50
        assert sum(v.numel() for k, v in sd.items() if k.startswith("rpn.head.")) == 4958603


def test_overrides_of_the_released_r50(r50):
    o = r50[2][1]
    assert o["MODEL.O2F_ON"] and o["MODEL.BACKBONE.CONV_BODY"] == "R-50-FPN-RETINANET"
    assert o["MODEL.RESNETS.STRIDE_IN_1X1"] is False and o["MODEL.RETINANET.USE_C5"] is False
    expected = {"NUM_CLASSES": 81, "NUM_CONVS": 4, "CHANNELS": 256, "CONV_BIAS": True, "OBJ_NUM_CONVS": 3,
                "OBJ_CHANNELS": 64, "TOPK": 7, "POTO_ALPHA": 0.8, "SCHEDULE_EPOCHS": 12, "INFERENCE_TH": 0.05,
                "PRE_NMS_TOP_N": 1000, "CENTER_SAMPLING_RADIUS": 1.5}
    assert {k: o[f"MODEL.O2F.{k}"] for k in expected} == expected
    assert "MODEL.O2F.USE_NMS" not in o and o["TEST.DETECTIONS_PER_IMG"] == 100
    assert o["INPUT.TO_BGR255"] is False
    assert o["INPUT.PIXEL_MEAN"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-12)
    assert o["INPUT.PIXEL_STD"] == pytest.approx([0.229, 0.224, 0.225], abs=1e-12)


# ----------------------------------------------------------------------------- C2: values
def test_head_values_are_copied_bitwise(r50):
    sd_mm, _, (sd, _, _) = r50
    pairs = {
        "centerness_tower.0.weight": "centerness_convs.0.conv.weight",
        "centerness_tower.4.bias": "centerness_convs.1.gn.bias",
        "centerness_tower.6.bias": "centerness_convs.2.conv.bias",
        "centerness.weight": "conv_centerness.weight",
        "cls_tower.9.bias": "cls_convs.3.conv.bias",
        "bbox_tower.1.weight": "reg_convs.0.gn.weight",
        "cls_logits.weight": "conv_cls.weight",
        "bbox_pred.bias": "conv_reg.bias",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(sd["rpn.head." + ours], sd_mm["bbox_head." + theirs]), ours
    scale = sd["rpn.head.scales.3.scale"]  # 0-d in mmcv, [1] here
    assert scale.shape == (1,) and scale.item() == sd_mm["bbox_head.scales.3.scale"].item()


def test_unknown_head_keys_fail(r50):
    sd_mm, meta, _ = r50
    with pytest.raises(ConversionError, match="bbox_head.foo.weight"):
        convert({**sd_mm, "bbox_head.foo.weight": torch.zeros(1)}, meta)
    with pytest.raises(ConversionError, match="deformable"):
        convert({**sd_mm, "bbox_head.cls_convs.3.conv.conv_offset.weight": torch.zeros(27, 256, 3, 3)}, meta)


# ----------------------------------------------------------------------------- C12: round trip
def test_round_trips(r50):
    sd_mm, meta, (sd, _, _) = r50
    back = export(sd, "O2F")
    assert set(back) == set(sd_mm)
    # Only the regenerated num_batches_tracked (0) and the eps-shifted variances may differ.
    changed = {k for k, v in sd_mm.items() if back[k].shape != v.shape or not torch.equal(back[k], v)}
    assert changed <= {k for k in sd_mm if k.endswith(("num_batches_tracked", "running_var"))}
    assert all(back[k].item() == 0 for k in changed if k.endswith("num_batches_tracked"))
    variances = [k for k in sd_mm if k.endswith("running_var")]
    torch.testing.assert_close([back[k] for k in variances], [sd_mm[k] for k in variances], rtol=1e-6, atol=0)
    again = convert(back, meta)[0]
    assert list(again) == list(sd)
    assert all(torch.equal(again[k], sd[k]) for k in sd if not k.endswith("running_var"))
    with pytest.raises(ConversionError, match="rpn.head.extra.weight"):
        export({**sd, "rpn.head.extra.weight": torch.zeros(1)}, "O2F")


# ----------------------------------------------------------------------------- function: same head outputs
def _ref_o2f_head(feats, sd):
    """O2FHead.forward_single per level: cls logits, clamp(scale * reg, 0) * stride, objectness
    logits from the objectness convs on the reg tower output (o2f §2.3)."""
    outputs = []
    for level, (x, stride) in enumerate(zip(feats, STRIDES)):
        cls = F.conv2d(ref_tower(x, sd, "cls_convs"), sd["conv_cls.weight"], sd["conv_cls.bias"], padding=1)
        reg_feat = ref_tower(x, sd, "reg_convs")
        raw = F.conv2d(reg_feat, sd["conv_reg.weight"], sd["conv_reg.bias"], padding=1)
        obj_feat = ref_tower(reg_feat, sd, "centerness_convs", num=3)
        obj = F.conv2d(obj_feat, sd["conv_centerness.weight"], sd["conv_centerness.bias"], padding=1)
        outputs.append((cls, (raw * sd[f"scales.{level}.scale"]).clamp(min=0) * stride, obj))
    return outputs


def test_converted_head_computes_the_mmdet_head_outputs(r50):
    sd_mm, _, (sd, overrides, _) = r50
    head = build_dense_head(config_of(overrides), 256).head.double()
    head.load_state_dict({k[len("rpn.head."):]: v.double() for k, v in sd.items() if k.startswith("rpn.head.")})
    ref_sd = {k[len("bbox_head."):]: v.double() for k, v in sd_mm.items() if k.startswith("bbox_head.")}
    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(1, 256, s, s + 1, generator=g, dtype=torch.float64) for s in (6, 3, 2, 2, 2)]
    with torch.no_grad():
        logits, reg, objectness = head(feats)
        ref = _ref_o2f_head(feats, ref_sd)
    for level, (cls_ref, box_ref, obj_ref) in enumerate(ref):
        torch.testing.assert_close(logits[level], cls_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(objectness[level], obj_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(reg[level] * STRIDES[level], box_ref, rtol=1e-10, atol=1e-12)
        assert (box_ref == 0).any() and (box_ref > 0).any()  # both sides of the clamp are exercised


# ----------------------------------------------------------------------------- tools/convert_checkpoint.py
def test_the_shared_tool_converts_an_o2f_checkpoint(r50, tmp_path, capsys):
    sd_mm, meta, (sd, overrides, _) = r50
    tool = load_tool()
    source, target = tmp_path / "o2f_r50_1x_mmdet.pth", tmp_path / "o2f_r50_1x.pth"
    torch.save({"meta": meta, "state_dict": sd_mm, "optimizer": {}}, source)
    tool.main([str(source), str(target)])
    printed = capsys.readouterr().out
    assert "O2F detector: 389 keys -> 336" in printed and "MODEL.O2F.TOPK 7" in printed
    written = torch.load(target, weights_only=True)
    assert written["meta"]["head"] == "O2F" and written["meta"]["cfg_overrides"] == overrides
    assert list(written["model"]) == list(sd)
    model = build_detection_model(config_of(written["meta"]["cfg_overrides"]))
    result = model.load_state_dict(written["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
