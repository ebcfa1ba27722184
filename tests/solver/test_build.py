"""make_optimizer parameter-group rules (spec C15, C16) on a tiny hand-made model."""
import os

import pytest
import torch
from torch import nn

from atss_core.config import cfg as default_cfg
from atss_core.layers.batch_norm import FrozenBatchNorm2d
from atss_core.solver import make_optimizer


class _Offset(nn.Module):
    """Mimics DFConv2d's names: ``offset`` conv + the deformable ``conv``."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Conv2d(4, 27, 3)
        self.conv = nn.Conv2d(4, 4, 3, bias=False)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Conv2d(3, 4, 1)
        self.frozen.requires_grad_(False)
        self.conv = nn.Conv2d(3, 4, 1)  # weight + bias
        self.gn = nn.GroupNorm(2, 4)  # weight + bias
        self.bn = FrozenBatchNorm2d(4, trainable_affine=True)
        self.stat_bn = FrozenBatchNorm2d(4)  # buffers only: no groups
        self.dcn = _Offset()


def _cfg(**solver):
    # Plain assignment, not merge_from_list: yacs refuses int -> float (the
    # defaults of BIAS_LR_FACTOR and WEIGHT_DECAY_BIAS are ints).
    cfg = default_cfg.clone()
    values = {**dict(BASE_LR=0.01, WEIGHT_DECAY=1e-4, BIAS_LR_FACTOR=2, WEIGHT_DECAY_BIAS=0.0), **solver}
    for key, value in values.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _groups_by_name(model, optimizer):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(names) == len(optimizer.param_groups)
    for name, group in zip(names, optimizer.param_groups):
        assert len(group["params"]) == 1
        assert group["params"][0] is dict(model.named_parameters())[name]
    return {name: (g["lr"], g["weight_decay"]) for name, g in zip(names, optimizer.param_groups)}


def test_atss_rules_bias_factor_and_offset_factor():
    model = TinyNet()
    opt = make_optimizer(_cfg(DCONV_OFFSETS_LR_FACTOR=0.1), model)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9
    g = _groups_by_name(model, opt)
    assert "frozen.weight" not in g and "frozen.bias" not in g
    assert g["conv.weight"] == pytest.approx((0.01, 1e-4))
    assert g["conv.bias"] == pytest.approx((0.02, 0.0))
    # WEIGHT_DECAY_NORM = -1: norm params follow the generic and bias rules
    assert g["gn.weight"] == pytest.approx((0.01, 1e-4))
    assert g["gn.bias"] == pytest.approx((0.02, 0.0))
    assert g["bn.weight"] == pytest.approx((0.01, 1e-4))
    assert g["bn.bias"] == pytest.approx((0.02, 0.0))
    assert g["dcn.offset.weight"] == pytest.approx((0.001, 1e-4))
    assert g["dcn.offset.bias"] == pytest.approx((0.002, 0.0))
    assert g["dcn.conv.weight"] == pytest.approx((0.01, 1e-4))
    assert len(g) == 9  # stat_bn has only buffers


def test_weight_decay_norm_overrides_bias_rule_for_norm_layers():
    model = TinyNet()
    g = _groups_by_name(model, make_optimizer(_cfg(WEIGHT_DECAY_NORM=0.0), model))
    for name in ("gn.weight", "gn.bias", "bn.weight", "bn.bias"):
        assert g[name] == pytest.approx((0.01, 0.0)), name
    assert g["conv.bias"] == pytest.approx((0.02, 0.0))  # not a norm layer: bias rule stays
    assert g["conv.weight"] == pytest.approx((0.01, 1e-4))


def test_norm_detection_is_by_module_type_not_name():
    model = nn.Sequential()
    model.add_module("gn_lookalike", nn.Conv2d(2, 2, 1))  # name says "gn", type is a conv
    model.add_module("plain", nn.BatchNorm2d(2))
    g = _groups_by_name(model, make_optimizer(_cfg(WEIGHT_DECAY_NORM=0.5), model))
    assert g["gn_lookalike.weight"] == pytest.approx((0.01, 1e-4))
    assert g["plain.weight"] == pytest.approx((0.01, 0.5))
    assert g["plain.bias"] == pytest.approx((0.01, 0.5))


def test_adamw_o2f_crowdhuman_recipe():
    model = TinyNet()
    cfg = _cfg(OPTIMIZER="AdamW", BASE_LR=4e-5, BIAS_LR_FACTOR=1, WEIGHT_DECAY_BIAS=1e-4, ADAMW_BETAS=(0.9, 0.95))
    opt = make_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    assert all(g["lr"] == pytest.approx(4e-5) and g["weight_decay"] == pytest.approx(1e-4) for g in opt.param_groups)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER.*'Adam'"):
        make_optimizer(_cfg(OPTIMIZER="Adam"), TinyNet())


def test_step_uses_group_decay():
    # One SGD step, no momentum history: p' = p - lr * (grad + wd * p), checked in float64.
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(3.0)
    opt = make_optimizer(_cfg(WEIGHT_DECAY=0.1, WEIGHT_DECAY_BIAS=0.0), model)
    model(torch.ones(1, 1)).sum().backward()  # grads 1 and 1
    opt.step()
    assert model.weight.item() == pytest.approx(2.0 - 0.01 * (1 + 0.1 * 2.0))
    assert model.bias.item() == pytest.approx(3.0 - 0.02 * 1.0)


def test_atss_r50_1x_param_groups_framework_spec():
    # framework spec 12 (Optimizer): 101 groups, 27 biases (lr 0.02, wd 0), the
    # rest lr 0.01 / wd 1e-4; nothing from the frozen stem/layer1; the first
    # group (the lr the log prints) is layer2.0.downsample.0.weight.
    from atss_core.modeling.detector import build_detection_model

    cfg = default_cfg.clone()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg.merge_from_file(os.path.join(repo, "configs", "atss", "atss_R_50_FPN_1x.yaml"))
    model = build_detection_model(cfg)
    opt = make_optimizer(cfg, model)
    g = _groups_by_name(model, opt)
    assert len(g) == 101
    assert next(iter(g)) == "backbone.body.layer2.0.downsample.0.weight"
    assert not any(n.startswith(("backbone.body.stem.", "backbone.body.layer1.")) for n in g)
    biases = {n: v for n, v in g.items() if "bias" in n}
    assert len(biases) == 27
    assert all(v == pytest.approx((0.02, 0.0)) for v in biases.values())
    assert all(v == pytest.approx((0.01, 1e-4)) for n, v in g.items() if n not in biases)
