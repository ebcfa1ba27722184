import pytest
import torch

from atss_core.config import cfg as base_cfg
from atss_core.modeling.backbone import BACKBONES, build_backbone


def make_cfg(*opts):
    cfg = base_cfg.clone()
    cfg.merge_from_file("configs/atss/atss_R_50_FPN_1x.yaml")
    cfg.merge_from_list(list(opts))
    return cfg


def test_registered_names():
    expected = {"R-18-FPN-RETINANET", "R-34-FPN-RETINANET", "R-50-FPN-RETINANET", "R-101-FPN-RETINANET"}
    assert expected <= set(BACKBONES)


def test_unknown_conv_body_lists_registered_names():
    with pytest.raises(KeyError, match="CONV_BODY = 'R-50-C4'.*R-50-FPN-RETINANET"):
        build_backbone(base_cfg.clone())  # the default CONV_BODY is the legacy R-50-C4


def test_r50_structure_and_trainable_params():
    bb = build_backbone(make_cfg())
    assert [n for n, _ in bb.named_children()] == ["body", "fpn"]
    assert bb.out_channels == 256
    keys = list(bb.state_dict())
    assert sum(k.startswith("body.") for k in keys) == 265 and sum(k.startswith("fpn.") for k in keys) == 16
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    # framework §3.6: body 42 (layer2..4 convs) + FPN 16 of the 101 trainable ATSS tensors.
    assert len(trainable) == 58
    assert sum(n.startswith("body.") for n in trainable) == 42
    assert trainable[0] == "body.layer2.0.downsample.0.weight"


def test_r34_blocks_and_output_tuple():
    cfg = make_cfg(
        "MODEL.BACKBONE.CONV_BODY", "R-34-FPN-RETINANET",
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    )
    bb = build_backbone(cfg)
    assert [len(getattr(bb.body, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert tuple(bb.fpn.fpn_inner4.weight.shape) == (256, 512, 1, 1)
    assert tuple(bb.fpn.fpn_inner2.weight.shape) == (256, 128, 1, 1)
    out = bb(torch.randn(1, 3, 64, 64))
    assert isinstance(out, tuple) and len(out) == 5
