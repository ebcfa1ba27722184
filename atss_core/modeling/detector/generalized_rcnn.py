"""Backbone + one dense head: the detector of every atss_core config.

The attribute names ``backbone`` and ``rpn`` are the checkpoint prefixes of
sfzhang15/ATSS (``backbone.body.*``, ``backbone.fpn.*``, ``rpn.head.*``), so
released weights load. There are no ROI heads.
"""
from torch import nn

from atss_core.modeling.backbone import build_backbone
from atss_core.modeling.dense_heads import build_dense_head
from atss_core.structures.image_list import to_image_list


class GeneralizedRCNN(nn.Module):
    def __init__(self, backbone, rpn):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return cls(backbone, build_dense_head(cfg, backbone.out_channels))

    def forward(self, images, targets=None):
        """
        Args:
            images: ImageList, (N, 3, H, W) tensor or list of (3, H, W) tensors.
            targets: list of N BoxList with field "labels" (training only).

        Returns:
            training: dict of scalar losses (the head's keys);
            eval: list of N BoxList in each image's resized, unpadded
            coordinates, with fields "scores" and "labels".
        """
        if self.training and targets is None:
            raise ValueError("in training mode, targets must be given")
        images = to_image_list(images)
        features = self.backbone(images.tensors)
        detections, losses = self.rpn(images, list(features), targets)
        return losses if self.training else detections
