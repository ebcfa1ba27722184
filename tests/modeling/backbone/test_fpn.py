import math

import torch
import torch.nn.functional as F

from atss_core.config import cfg as base_cfg
from atss_core.modeling.backbone import FPN, LastLevelP6P7, build_backbone
from atss_core.modeling.make_layers import conv_with_kaiming_uniform


def make_cfg(*opts):
    cfg = base_cfg.clone()
    cfg.merge_from_file("configs/atss/atss_R_50_FPN_1x.yaml")
    cfg.merge_from_list(list(opts))
    return cfg


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def expected_levels(h, w):
    """P3..P7 sizes from the conv formula (framework §3.4); caffe-style 1x1/2 convs in the stages."""
    sizes = []
    for n in (h, w):
        n = conv_out(conv_out(n, 7, 2, 3), 3, 2, 1)  # stem conv + max-pool = C2
        per = []
        for _ in range(3):  # C3, C4, C5
            n = conv_out(n, 1, 2, 0)
            per.append(n)
        for _ in range(2):  # P6, P7
            n = conv_out(n, 3, 2, 1)
            per.append(n)
        sizes.append(per)
    return list(zip(*sizes))


def test_level_formula_reproduces_spec_table():
    assert expected_levels(800, 1088) == [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]


def r18_backbone(*opts):
    cfg = make_cfg(
        "MODEL.BACKBONE.CONV_BODY", "R-18-FPN-RETINANET",
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.STRIDE_IN_1X1", True,
        *opts,
    )
    return build_backbone(cfg)


def test_feature_sizes_small_inputs():
    bb = r18_backbone().eval()
    for h, w in [(64, 96), (70, 90)]:  # 70x90 is not a multiple of 32: upsampling goes by size
        with torch.no_grad():
            outs = bb(torch.randn(1, 3, h, w))
        assert [tuple(o.shape[-2:]) for o in outs] == expected_levels(h, w)
        assert all(o.shape[1] == 256 for o in outs)


def test_r50_fpn_keys_and_shapes():
    bb = build_backbone(make_cfg())
    s = {k: tuple(v.shape) for k, v in bb.fpn.state_dict().items()}
    assert len(s) == 16
    assert s["fpn_inner2.weight"] == (256, 512, 1, 1)
    assert s["fpn_inner3.weight"] == (256, 1024, 1, 1)
    assert s["fpn_inner4.weight"] == (256, 2048, 1, 1)
    for k in (2, 3, 4):
        assert s[f"fpn_layer{k}.weight"] == (256, 256, 3, 3) and s[f"fpn_layer{k}.bias"] == (256,)
    assert s["top_blocks.p6.weight"] == (256, 256, 3, 3) and bb.fpn.top_blocks.use_P5
    assert s["top_blocks.p7.weight"] == (256, 256, 3, 3)
    assert "fpn_inner1.weight" not in s
    c5 = build_backbone(make_cfg("MODEL.RETINANET.USE_C5", True)).fpn
    assert tuple(c5.top_blocks.p6.weight.shape) == (256, 2048, 3, 3) and not c5.top_blocks.use_P5


def test_fpn_gn_keys():
    fpn = build_backbone(make_cfg("MODEL.FPN.USE_GN", True, "MODEL.FPN.USE_RELU", True)).fpn
    keys = set(fpn.state_dict())
    assert {"fpn_inner2.0.weight", "fpn_inner2.1.weight", "fpn_inner2.1.bias"} <= keys
    assert "fpn_inner2.0.bias" not in keys


def test_fpn_init():
    fpn = build_backbone(make_cfg()).fpn
    bound = math.sqrt(3 / 2304)
    assert abs(bound - 0.036084) < 1e-6
    for conv in (fpn.fpn_layer2, fpn.fpn_layer4, fpn.top_blocks.p6, fpn.top_blocks.p7):
        assert 0.95 * bound < conv.weight.abs().max().item() <= bound
        assert torch.equal(conv.bias, torch.zeros(256))
    assert fpn.fpn_inner4.weight.abs().max().item() <= math.sqrt(3 / 2048)


def test_fpn_dataflow_against_manual_computation():
    torch.manual_seed(0)
    fpn = FPN([0, 3, 4, 5], 2, conv_with_kaiming_uniform(), LastLevelP6P7(2, 2)).double()
    for p in fpn.parameters():
        torch.nn.init.normal_(p)
    c = [torch.randn(1, ch, s, s + 1, dtype=torch.float64) for ch, s in [(9, 16), (3, 8), (4, 4), (5, 2)]]
    outs = fpn(c)

    def conv(x, m, pad):
        return F.conv2d(x, m.weight, m.bias, padding=pad)

    last5 = conv(c[3], fpn.fpn_inner4, 0)
    last4 = conv(c[2], fpn.fpn_inner3, 0) + last5.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :4, :5]
    last3 = conv(c[1], fpn.fpn_inner2, 0) + last4.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :8, :9]
    p5 = conv(last5, fpn.fpn_layer4, 1)
    p6 = F.conv2d(p5, fpn.top_blocks.p6.weight, fpn.top_blocks.p6.bias, stride=2, padding=1)
    p7 = F.conv2d(F.relu(p6), fpn.top_blocks.p7.weight, fpn.top_blocks.p7.bias, stride=2, padding=1)
    expected = [conv(last3, fpn.fpn_layer2, 1), conv(last4, fpn.fpn_layer3, 1), p5, p6, p7]
    assert len(outs) == 5
    for o, e in zip(outs, expected):
        torch.testing.assert_close(o, e, rtol=0, atol=1e-12)
