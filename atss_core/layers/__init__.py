"""Layers and ops, importable under the names of sfzhang15/ATSS ``layers``.

Compiled ops come from ``atss_core._C`` when it is built; every op has a
pure-PyTorch fallback, so importing this package never requires the extension.
"""
from .batch_norm import FrozenBatchNorm2d
from .dcn import DeformConv, ModulatedDeformConv, ModulatedDeformConvPack, deform_conv, modulated_deform_conv
from .misc import Conv2d, DFConv2d
from .nms import ml_nms, nms
from .scale import Scale
from .sigmoid_focal_loss import SigmoidFocalLoss, sigmoid_focal_loss

__all__ = [
    "FrozenBatchNorm2d",
    "Conv2d",
    "DFConv2d",
    "DeformConv",
    "ModulatedDeformConv",
    "ModulatedDeformConvPack",
    "deform_conv",
    "modulated_deform_conv",
    "nms",
    "ml_nms",
    "Scale",
    "SigmoidFocalLoss",
    "sigmoid_focal_loss",
]
