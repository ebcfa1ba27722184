"""Optimizer (one parameter group per trainable parameter, spec C15/C16) and lr schedule from cfg."""
import logging

import torch
from torch import nn

from atss_core.layers.batch_norm import FrozenBatchNorm2d

from .lr_scheduler import WarmupMultiStepLR

# Modules whose parameters WEIGHT_DECAY_NORM applies to. FrozenBatchNorm2d has
# parameters only in its trainable-affine form (spec C11).
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    FrozenBatchNorm2d,
)


def _norm_param_ids(model):
    return {
        id(p)
        for module in model.modules()
        if isinstance(module, NORM_TYPES)
        for p in module.parameters(recurse=False)
    }


def build_param_groups(
    model,
    base_lr,
    weight_decay,
    bias_lr_factor=1.0,
    weight_decay_bias=None,
    offsets_lr_factor=1.0,
    weight_decay_norm=-1.0,
):
    """One ``{"params": [p], "lr", "weight_decay"}`` dict per trainable parameter.

    Order = ``model.named_parameters()``. Rules, applied in turn (spec C15):
    "bias" in the name -> lr x ``bias_lr_factor``, decay ``weight_decay_bias``;
    name ending ``.offset.weight``/``.offset.bias`` (DCN offsets) -> lr x
    ``offsets_lr_factor``; a parameter of a norm layer when
    ``weight_decay_norm >= 0`` -> lr ``base_lr`` and decay ``weight_decay_norm``.
    """
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    norm_ids = _norm_param_ids(model) if weight_decay_norm >= 0 else set()
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, decay = base_lr, weight_decay
        if "bias" in name:
            lr, decay = base_lr * bias_lr_factor, weight_decay_bias
        if name.endswith((".offset.weight", ".offset.bias")):
            lr *= offsets_lr_factor
        if id(param) in norm_ids:
            lr, decay = base_lr, weight_decay_norm
        groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return groups


def make_optimizer(cfg, model):
    """SGD or AdamW over ``build_param_groups`` from ``cfg.SOLVER``."""
    solver = cfg.SOLVER
    if solver.DCONV_OFFSETS_LR_FACTOR != 1.0:
        logging.getLogger(__name__).info("DCN offset parameters use lr x %s", solver.DCONV_OFFSETS_LR_FACTOR)
    groups = build_param_groups(
        model,
        solver.BASE_LR,
        solver.WEIGHT_DECAY,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        offsets_lr_factor=solver.DCONV_OFFSETS_LR_FACTOR,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
    )
    if not groups:
        raise ValueError("make_optimizer: the model has no parameter with requires_grad=True")
    name = str(solver.OPTIMIZER).lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM)
    if name == "adamw":
        betas = tuple(float(b) for b in solver.ADAMW_BETAS)
        if len(betas) != 2:
            raise ValueError(f"SOLVER.ADAMW_BETAS must hold two floats, got {solver.ADAMW_BETAS!r}")
        return torch.optim.AdamW(groups, lr=solver.BASE_LR, betas=betas, eps=1e-8)
    raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {solver.OPTIMIZER!r}")


def make_lr_scheduler(cfg, optimizer):
    """``WarmupMultiStepLR`` from ``cfg.SOLVER`` (STEPS, GAMMA, WARMUP_*)."""
    solver = cfg.SOLVER
    return WarmupMultiStepLR(
        optimizer,
        solver.STEPS,
        solver.GAMMA,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS,
        warmup_method=solver.WARMUP_METHOD,
    )
