"""ResNet/ResNeXt + FPN backbones, chosen by ``MODEL.BACKBONE.CONV_BODY``."""
from .backbone import BACKBONES, Backbone, build_backbone
from .fpn import FPN, LastLevelP6P7
from .resnet import BasicBlock, Bottleneck, ResNet, build_resnet

__all__ = [
    "BACKBONES",
    "Backbone",
    "build_backbone",
    "FPN",
    "LastLevelP6P7",
    "ResNet",
    "Bottleneck",
    "BasicBlock",
    "build_resnet",
]
