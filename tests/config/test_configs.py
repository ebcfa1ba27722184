"""Every shipped yaml loads into cfg and builds its model; ATSS R-50 keys match the original."""
import glob
import os

import pytest
import torch

from atss_core.config import cfg as default_cfg
from atss_core.modeling.detector import build_detection_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def load(path, *opts):
    cfg = default_cfg.clone()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def test_all_original_atss_configs_ship():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "atss", "*.yaml"))}
    expected = {
        f"atss_{v}.yaml"
        for v in (
            "R_50_FPN_1x", "dcnv2_R_50_FPN_1x", "R_101_FPN_1x", "dcnv2_R_101_FPN_1x", "R_101_FPN_2x",
            "dcnv2_R_101_FPN_2x", "X_101_32x8d_FPN_2x", "dcnv2_X_101_32x8d_FPN_2x", "X_101_64x4d_FPN_2x",
            "dcnv2_X_101_64x4d_FPN_2x",
        )
    }
    assert names == expected


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_loads_and_builds(path):
    cfg = load(path, "MODEL.DEVICE", "cpu")
    with torch.device("meta"):  # shapes and keys only: no memory, no init cost
        model = build_detection_model(cfg)
    assert any(k.startswith("rpn.head.") for k in model.state_dict())


def test_multiscale_range_in_2x_config():
    cfg = load(os.path.join(ROOT, "configs/atss/atss_R_101_FPN_2x.yaml"))
    assert tuple(cfg.INPUT.MIN_SIZE_RANGE_TRAIN) == (640, 800)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,)


def test_atss_r50_state_dict_matches_original():
    cfg = load(os.path.join(ROOT, "configs/atss/atss_R_50_FPN_1x.yaml"))
    model = build_detection_model(cfg)
    sd = model.state_dict()
    assert len(sd) == 329
    assert sum(p.numel() for p in model.parameters()) == 32_244_250
    shapes = {
        "backbone.body.stem.conv1.weight": (64, 3, 7, 7),
        "backbone.body.layer1.0.conv1.weight": (64, 64, 1, 1),
        "backbone.body.layer1.0.downsample.1.running_var": (256,),
        "backbone.fpn.fpn_inner2.weight": (256, 512, 1, 1),
        "backbone.fpn.top_blocks.p6.weight": (256, 256, 3, 3),
        "rpn.head.cls_tower.0.weight": (256, 256, 3, 3),
        "rpn.head.cls_tower.10.bias": (256,),
        "rpn.head.cls_logits.weight": (80, 256, 3, 3),
        "rpn.head.bbox_pred.weight": (4, 256, 3, 3),
        "rpn.head.centerness.weight": (1, 256, 3, 3),
        "rpn.head.scales.0.scale": (1,),
        "rpn.head.scales.4.scale": (1,),
        "rpn.anchor_generator.cell_anchors.0": (1, 4),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    for i in range(5):
        assert f"rpn.anchor_generator.cell_anchors.{i}" in sd
    assert not any(k.startswith("roi_heads") for k in sd)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 101
    assert not any(n.startswith(("backbone.body.stem", "backbone.body.layer1.")) for n in trainable)


def test_atss_dcnv2_r50_has_359_entries():
    cfg = load(os.path.join(ROOT, "configs/atss/atss_dcnv2_R_50_FPN_1x.yaml"))
    with torch.device("meta"):
        sd = build_detection_model(cfg).state_dict()
    assert len(sd) == 359
    assert tuple(sd["backbone.body.layer2.0.conv2.offset.weight"].shape) == (27, 128, 3, 3)
    assert tuple(sd["rpn.head.cls_tower.9.offset.weight"].shape) == (27, 256, 3, 3)
    assert "rpn.head.cls_tower.9.conv.bias" in sd
    assert not any(k.startswith("backbone.body.layer1.") and "conv2.offset" in k for k in sd)


def test_exactly_one_head_flag():
    cfg = load(os.path.join(ROOT, "configs/atss/atss_R_50_FPN_1x.yaml"), "MODEL.FCOS_ON", True)
    with pytest.raises(ValueError, match="exactly one"):
        build_detection_model(cfg)
    cfg = load(os.path.join(ROOT, "configs/atss/atss_R_50_FPN_1x.yaml"), "MODEL.ATSS_ON", False)
    with pytest.raises(ValueError, match="exactly one"):
        build_detection_model(cfg)


def test_unknown_key_is_rejected_by_name():
    cfg = default_cfg.clone()
    with pytest.raises(Exception, match="MODEL.ATSS.TOPKK"):
        cfg.merge_from_list(["MODEL.ATSS.TOPKK", 9])
