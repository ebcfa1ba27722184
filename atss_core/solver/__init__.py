"""Optimizer and learning-rate schedule builders."""
from .build import build_param_groups, make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupMultiStepLR

__all__ = ["build_param_groups", "make_optimizer", "make_lr_scheduler", "WarmupMultiStepLR"]
