import math
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision

from atss_core.config import cfg as base_cfg
from atss_core.layers import FrozenBatchNorm2d
from atss_core.modeling.backbone import build_resnet
from atss_core.utils.c2_model_loading import rename_c2_key, rename_c2_weights
from atss_core.utils.model_serialization import (
    align_and_update_state_dicts,
    convert_imagenet_backbone,
    load_state_dict,
    match_keys_by_suffix,
    strip_prefix_if_present,
)

NO_DCN = (False, False, False, False)


def test_strip_prefix_only_if_all_keys_have_it():
    sd = OrderedDict([("module.a.weight", 1), ("module.b", 2)])
    assert list(strip_prefix_if_present(sd, "module.")) == ["a.weight", "b"]
    mixed = OrderedDict([("module.a.weight", 1), ("b", 2)])
    assert list(strip_prefix_if_present(mixed, "module.")) == ["module.a.weight", "b"]


def test_suffix_matching_spec_example():
    model = OrderedDict(
        [
            ("backbone.body.stem.conv1.weight", torch.zeros(2)),
            ("backbone.body.layer1.0.conv1.weight", torch.zeros(2)),
            ("rpn.head.cls_logits.weight", torch.full((2,), 7.0)),
        ]
    )
    loaded = {"conv1.weight": torch.tensor([1.0, 1.0]), "layer1.0.conv1.weight": torch.tensor([2.0, 2.0])}
    report = align_and_update_state_dicts(model, loaded)
    assert report.matched == {
        "backbone.body.stem.conv1.weight": "conv1.weight",
        "backbone.body.layer1.0.conv1.weight": "layer1.0.conv1.weight",
    }
    assert torch.equal(model["backbone.body.stem.conv1.weight"], torch.tensor([1.0, 1.0]))
    assert torch.equal(model["backbone.body.layer1.0.conv1.weight"], torch.tensor([2.0, 2.0]))
    assert torch.equal(model["rpn.head.cls_logits.weight"], torch.full((2,), 7.0))  # kept
    assert report.unmatched_model == ["rpn.head.cls_logits.weight"] and report.unused_loaded == []


def test_suffix_matching_equals_brute_force_definition():
    # framework §4.3: score = len(loaded key) if model_key.endswith(loaded key); highest score wins.
    rng = random.Random(0)
    parts = ["body", "layer1", "0", "conv1", "weight", "bn1", "fpn", "x", "1"]
    model_keys = sorted({".".join(rng.choice(parts) for _ in range(rng.randint(1, 6))) for _ in range(300)})
    loaded_keys = {".".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) for _ in range(200)}
    loaded_keys |= {k[k.index(".") + 1:] for k in model_keys[::7] if "." in k}
    brute = {}
    for mk in model_keys:
        best = max(loaded_keys, key=lambda lk: len(lk) if mk.endswith(lk) else 0)
        if mk.endswith(best):
            brute[mk] = best
    assert match_keys_by_suffix(model_keys, loaded_keys) == brute
    assert len(brute) > 50


def test_shape_mismatch_is_readable():
    model = OrderedDict([("a.fc.weight", torch.zeros(3, 2)), ("a.b", torch.zeros(1))])
    with pytest.raises(ValueError, match=r"a\.fc\.weight \(3, 2\) <- fc\.weight \(4, 2\)"):
        align_and_update_state_dicts(model, {"fc.weight": torch.zeros(4, 2), "b": torch.zeros(1)})


def test_load_state_dict_strips_module_prefix():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    src = {"module.0.weight": torch.ones(2, 2), "module.0.bias": torch.ones(2)}
    report = load_state_dict(model, src)
    assert len(report.matched) == 2 and torch.equal(model[0].weight, torch.ones(2, 2))


# framework §4.4 and checkpoints.md §3.1 worked examples.
C2_TABLE = {
    "conv1_w": "conv1.weight",
    "conv1_b": "conv1.bias",
    "res_conv1_bn_s": "bn1.weight",
    "res_conv1_bn_b": "bn1.bias",
    "res2_0_branch1_w": "layer1.0.downsample.0.weight",
    "res2_0_branch1_bn_s": "layer1.0.downsample.1.weight",
    "res2_0_branch1_bn_b": "layer1.0.downsample.1.bias",
    "res2_0_branch2a_w": "layer1.0.conv1.weight",
    "res2_0_branch2a_b": "layer1.0.conv1.bias",
    "res2_0_branch2a_bn_b": "layer1.0.bn1.bias",
    "res3_3_branch2b_w": "layer2.3.conv2.weight",
    "res3_3_branch2b_bn_s": "layer2.3.bn2.weight",
    "res5_2_branch2c_bn_b": "layer4.2.bn3.bias",
    "fc1000_w": "fc1000.weight",
    "pred_w": "fc1000.weight",
    "pred_b": "fc1000.bias",
    # GN blobs (R-50-GN)
    "conv1_gn_s": "bn1.weight",
    "res2_0_branch2a_gn_s": "layer1.0.bn1.weight",
    "res4_5_branch2c_gn_b": "layer3.5.bn3.bias",
    "res2_0_branch1_gn_s": "layer1.0.downsample.1.weight",
}


@pytest.mark.parametrize("c2, ours", sorted(C2_TABLE.items()))
def test_c2_renames(c2, ours):
    assert rename_c2_key(c2) == ours


def test_c2_dcn_rename_and_skips():
    blobs = {
        "res3_0_branch2b_w": 1,
        "res2_0_branch2b_w": 2,
        "res5_2_branch2b_w": 3,
        "res3_0_branch2b_w_momentum": 4,
        "weight_order": 5,
    }
    out = rename_c2_weights({k: np.array(v) for k, v in blobs.items()}, (False, True, True, True))
    assert dict(out) == {
        "layer1.0.conv2.weight": torch.tensor(2),
        "layer2.0.conv2.conv.weight": torch.tensor(1),
        "layer4.2.conv2.conv.weight": torch.tensor(3),
    }


def _meta_body(depth, groups=1, width=64, dcn=NO_DCN, modulated=False):
    cfg = base_cfg.clone()
    r = cfg.MODEL.RESNETS
    r.NUM_GROUPS, r.WIDTH_PER_GROUP, r.STRIDE_IN_1X1 = groups, width, False
    r.STAGE_WITH_DCN, r.WITH_MODULATED_DCN = dcn, modulated
    with torch.device("meta"):
        return build_resnet(cfg, {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth])


@pytest.mark.parametrize(
    "tv_name, depth, groups, width, n_src, n_out",
    [
        ("resnet50", 50, 1, 64, 320, 265),
        ("resnet101", 101, 1, 64, 626, 520),
        ("resnext101_32x8d", 101, 32, 8, 626, 520),
        ("resnext101_64x4d", 101, 64, 4, 626, 520),
    ],
)
def test_torchvision_to_body_one_to_one(tv_name, depth, groups, width, n_src, n_out):
    # checkpoints.md §6 C4, on the meta device (shapes only).
    with torch.device("meta"):
        src = getattr(torchvision.models, tv_name)().state_dict()
    assert len(src) == n_src
    converted = convert_imagenet_backbone(src, NO_DCN, eps_fold=1e-5)
    ours = {k: tuple(v.shape) for k, v in converted.items()}
    body = {k: tuple(v.shape) for k, v in _meta_body(depth, groups, width).state_dict().items()}
    assert ours == body and len(body) == n_out
    dropped = {k for k in src if k not in converted and "stem." + k not in converted}
    assert dropped == {k for k in src if k.endswith("num_batches_tracked")} | {"fc.weight", "fc.bias"}


def test_torchvision_into_dcn_body_leaves_only_offsets():
    # checkpoints.md §6 C7: 291-key body, only the 26 offset tensors have no source.
    with torch.device("meta"):
        src = torchvision.models.resnet50().state_dict()
    body = _meta_body(50, dcn=(False, True, True, True), modulated=True).state_dict()
    assert len(body) == 291
    renamed = match_keys_by_suffix(body, convert_imagenet_backbone(src, (False, True, True, True)))
    unloaded = set(body) - set(renamed)
    assert len(unloaded) == 26 and all(".conv2.offset." in k for k in unloaded)
    plain = match_keys_by_suffix(body, convert_imagenet_backbone(src, NO_DCN))
    assert len(set(body) - set(plain)) == 39  # negative control: the rename is what loads conv2


@pytest.mark.parametrize("var, expected", [(0.01, 9.995003747), (1.0, 0.999995000037)])
def test_bn_eps_fold_arithmetic(var, expected):
    # checkpoints.md §6 C9: weight 1, mean 0 -> output for x = 1 is the effective scale.
    src = {"bn1.weight": torch.ones(1, dtype=torch.float64), "bn1.bias": torch.zeros(1, dtype=torch.float64),
           "bn1.running_mean": torch.zeros(1, dtype=torch.float64),
           "bn1.running_var": torch.full((1,), var, dtype=torch.float64)}
    folded = convert_imagenet_backbone(src, NO_DCN, eps_fold=1e-5)
    bn = FrozenBatchNorm2d(1).double()
    bn.load_state_dict({k[len("stem.bn1."):]: v for k, v in folded.items()})
    assert bn(torch.ones(1, 1, 1, 1, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-10)
    unfolded = convert_imagenet_backbone(src, NO_DCN, eps_fold=0.0)
    assert unfolded["stem.bn1.running_var"].item() == var
    assert math.isclose(1 / math.sqrt(var), 1 / math.sqrt(unfolded["stem.bn1.running_var"].item()))
