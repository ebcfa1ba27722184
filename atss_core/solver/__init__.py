"""Optimizer and learning-rate schedule builders."""
from .auto_scale import apply_auto_scale
from .build import build_param_groups, make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupMultiStepLR

__all__ = ["apply_auto_scale", "build_param_groups", "make_optimizer", "make_lr_scheduler", "WarmupMultiStepLR"]
