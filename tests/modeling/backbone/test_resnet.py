import math

import pytest
import torch

from atss_core.config import cfg as base_cfg
from atss_core.layers import DFConv2d, FrozenBatchNorm2d
from atss_core.modeling.backbone import build_resnet

R50 = (3, 4, 6, 3)
R101 = (3, 4, 23, 3)


def make_cfg(yaml=None, *opts):
    cfg = base_cfg.clone()
    if yaml:
        cfg.merge_from_file(f"configs/atss/{yaml}")
    cfg.merge_from_list(list(opts))
    return cfg


def r18_cfg(*opts):
    return make_cfg(
        None,
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        *opts,
    )


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_r50_body_keys_and_shapes():
    s = shapes(build_resnet(make_cfg("atss_R_50_FPN_1x.yaml"), R50))
    assert len(s) == 265
    assert s["stem.conv1.weight"] == (64, 3, 7, 7)
    assert s["layer1.0.downsample.1.running_var"] == (256,)
    c_in, c_out, c_b = (64, 256, 512, 1024), (256, 512, 1024, 2048), (64, 128, 256, 512)
    for i in range(4):
        assert s[f"layer{i + 1}.0.downsample.0.weight"] == (c_out[i], c_in[i], 1, 1)
        assert s[f"layer{i + 1}.1.conv1.weight"] == (c_b[i], c_out[i], 1, 1)
        assert s[f"layer{i + 1}.1.conv2.weight"] == (c_b[i], c_b[i], 3, 3)
        assert s[f"layer{i + 1}.1.conv3.weight"] == (c_out[i], c_b[i], 1, 1)
        assert f"layer{i + 1}.1.downsample.0.weight" not in s


def test_dcnv2_r50_body_keys():
    body = build_resnet(make_cfg("atss_dcnv2_R_50_FPN_1x.yaml"), R50)
    s = shapes(body)
    assert len(s) == 291
    assert s["layer2.0.conv2.offset.weight"] == (27, 128, 3, 3)
    assert s["layer2.0.conv2.offset.bias"] == (27,)
    assert s["layer2.0.conv2.conv.weight"] == (128, 128, 3, 3)
    assert not any(k.startswith("layer1.") and ".offset." in k for k in s)
    assert not any(k.endswith("conv2.conv.bias") for k in s)
    # STRIDE_IN_1X1 = True: the DCN itself never strides (kernels.md §3.1).
    assert body.layer2[0].conv2.offset.stride == (1, 1) and body.layer2[0].conv1.stride == (2, 2)


@pytest.mark.parametrize(
    "yaml, conv2_shape",
    [("atss_X_101_32x8d_FPN_2x.yaml", (256, 8, 3, 3)), ("atss_X_101_64x4d_FPN_2x.yaml", (256, 4, 3, 3))],
)
def test_resnext101_bodies(yaml, conv2_shape):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        body = build_resnet(make_cfg(yaml), R101)
    s = shapes(body)
    assert len(s) == 520  # R-50 body + 17 blocks x 15
    assert s["layer1.0.conv2.weight"] == conv2_shape
    assert s["layer1.0.conv1.weight"] == (256, 64, 1, 1)
    # pytorch style (STRIDE_IN_1X1 False): the 3x3 strides.
    assert body.layer3[0].conv2.stride == (2, 2) and body.layer3[0].conv1.stride == (1, 1)


def test_dcnv2_x101_strided_dcn():
    with torch.device("meta"):
        body = build_resnet(make_cfg("atss_dcnv2_X_101_32x8d_FPN_2x.yaml"), R101)
    conv2 = body.layer3[0].conv2
    assert isinstance(conv2, DFConv2d) and conv2.offset.stride == (2, 2) and conv2.conv.stride == (2, 2)
    assert conv2.conv.groups == 32 and tuple(conv2.conv.weight.shape) == (1024, 32, 3, 3)
    assert not isinstance(body.layer2[0].conv2, DFConv2d)


def test_r101_body_key_count():
    with torch.device("meta"):
        assert len(build_resnet(make_cfg("atss_R_101_FPN_1x.yaml"), R101).state_dict()) == 520


def test_downsample_parameters_come_first():
    body = build_resnet(r18_cfg(), (2, 2, 2, 2))
    names = [n for n, _ in body.named_parameters()]
    assert names[1] == "layer1.0.conv1.weight"  # R-18 layer1 has no downsample (64 -> 64, stride 1)
    assert names.index("layer2.0.downsample.0.weight") < names.index("layer2.0.conv1.weight")
    big = build_resnet(make_cfg("atss_R_50_FPN_1x.yaml", "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 0), R50)
    first = next(n for n, _ in big.named_parameters() if n.startswith("layer1.0."))
    assert first == "layer1.0.downsample.0.weight"


def test_stride_placement():
    caffe = build_resnet(r18_cfg(), (2, 2, 2, 2))
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].downsample[0].stride == (2, 2)
    cfg = make_cfg("atss_R_50_FPN_1x.yaml")
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    body = build_resnet(cfg, R50)
    assert body.layer4[0].conv1.stride == (1, 1) and body.layer4[0].conv2.stride == (2, 2)


def test_kaiming_init_bounds():
    body = build_resnet(make_cfg("atss_R_50_FPN_1x.yaml"), R50)
    for conv in (body.stem.conv1, body.layer3[2].conv2, body.layer4[0].downsample[0]):
        bound = math.sqrt(3 / (conv.weight[0].numel()))  # kaiming_uniform(a=1): gain 1
        assert 0.95 * bound < conv.weight.abs().max().item() <= bound


def test_freezing_r18_forward_backward():
    body = build_resnet(r18_cfg(), (2, 2, 2, 2))  # FREEZE_CONV_BODY_AT 2: stem + layer1
    body(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    for name, p in body.named_parameters():
        frozen = name.startswith(("stem.", "layer1."))
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
    assert any(p.grad.abs().sum() > 0 for n, p in body.named_parameters() if n.startswith("layer2."))


def test_freeze_at_zero_and_trainable_bn():
    body = build_resnet(r18_cfg("MODEL.RESNETS.BN_AFFINE_TRAINABLE", True), (2, 2, 2, 2))
    bn = body.layer2[0].bn1
    assert isinstance(bn, FrozenBatchNorm2d) and isinstance(bn.weight, torch.nn.Parameter)
    assert bn.weight.requires_grad and not body.layer1[0].bn1.weight.requires_grad
    open_body = build_resnet(r18_cfg("MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 0), (2, 2, 2, 2))
    assert all(p.requires_grad for p in open_body.parameters())
    with pytest.raises(ValueError, match="FREEZE_CONV_BODY_AT"):
        build_resnet(r18_cfg("MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 6), (2, 2, 2, 2))


def test_bn_eps_from_config():
    body = build_resnet(r18_cfg("MODEL.RESNETS.BN_EPS", 1e-5), (2, 2, 2, 2))
    assert body.stem.bn1.eps == 1e-5 and body.layer4[1].bn2.eps == 1e-5


def test_r18_gn_body_forward_shapes():
    cfg = r18_cfg("MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithGN", "MODEL.RESNETS.STEM_FUNC", "StemWithGN")
    body = build_resnet(cfg, (2, 2, 2, 2))
    assert isinstance(body.layer3[0].bn2, torch.nn.GroupNorm) and body.layer3[0].bn2.num_groups == 32
    assert sorted(shapes(body.layer2[0].downsample)) == ["0.weight", "1.bias", "1.weight"]
    # 64x96: stem conv /2 -> 32x48, max-pool /2 -> 16x24, then /2 per stage.
    outs = body(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]
    assert body.stage_out_channels == (64, 128, 256, 512)


def test_basic_block_config_errors():
    cfg = make_cfg(None, "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm")  # RES2_OUT_CHANNELS 256
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        build_resnet(cfg, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="Bottleneck"):
        build_resnet(r18_cfg("MODEL.RESNETS.STAGE_WITH_DCN", (False, True, False, False)), (2, 2, 2, 2))


def test_unknown_block_names_raise():
    with pytest.raises(KeyError, match="MODEL.RESNETS.TRANS_FUNC = 'Nope'.*BottleneckWithGN"):
        build_resnet(make_cfg(None, "MODEL.RESNETS.TRANS_FUNC", "Nope"), R50)
    with pytest.raises(KeyError, match="MODEL.RESNETS.STEM_FUNC"):
        build_resnet(make_cfg(None, "MODEL.RESNETS.STEM_FUNC", "Nope"), R50)
