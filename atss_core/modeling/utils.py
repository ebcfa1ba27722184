"""Flattening of per-level dense-head outputs into one row per anchor.

Glossary: N images, L levels, A anchors per location, K channels per anchor
(C classes, 4 box deltas or 1 centerness), R = sum_l H_l * W_l * A rows per image.
Rows are ordered level, then y, x, a (atss_heads §2.4), the order in which
``AnchorGenerator`` emits anchors.
"""
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor


class DensePredictions(NamedTuple):
    """Head outputs of a batch, one row per anchor.

    cls_logits (N, R, C), bbox_reg (N, R, 4), centerness (N, R) or None for
    heads without that branch. Raw logits and deltas: no sigmoid, no exp.
    """

    cls_logits: Tensor
    bbox_reg: Tensor
    centerness: Optional[Tensor]

    def float(self) -> "DensePredictions":
        return DensePredictions(*(None if t is None else t.float() for t in self))

    def detach(self) -> "DensePredictions":
        return DensePredictions(*(None if t is None else t.detach() for t in self))

    def image(self, i: int) -> "DensePredictions":
        """Rows of image ``i``: (R, C), (R, 4), (R,)."""
        return DensePredictions(*(None if t is None else t[i] for t in self))

    def rows(self, start: int, end: int) -> "DensePredictions":
        """Rows ``start:end`` of every image (e.g. one level): (N, end - start, ·)."""
        return DensePredictions(*(None if t is None else t[:, start:end] for t in self))


def joint_scores(predictions: DensePredictions) -> Tensor:
    """sigmoid(cls) x sigmoid(objectness), the score of the heads whose 1-channel branch is an
    objectness (DW, O2F): (N, R, C), or (R, C) for one image's rows."""
    return predictions.cls_logits.sigmoid() * predictions.centerness.sigmoid()[..., None]


def permute_and_flatten(layer: Tensor, num_anchors: int) -> Tensor:
    """(N, A*K, H, W) with anchor-major channels (a*K + k) -> (N, H*W*A, K)."""
    n, ak, h, w = layer.shape
    k = ak // num_anchors
    if k * num_anchors != ak:
        raise ValueError(f"{ak} channels are not a multiple of {num_anchors} anchors per location")
    return layer.view(n, num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * num_anchors, k)


def cat_levels(layers: List[Tensor], num_anchors: int) -> Tensor:
    """Per-level (N, A*K, H_l, W_l) maps -> (N, R, K), levels concatenated."""
    return torch.cat([permute_and_flatten(x, num_anchors) for x in layers], dim=1)


def flatten_head_outputs(
    logits: List[Tensor], bbox_reg: List[Tensor], centerness: List[Tensor], num_anchors: int
) -> DensePredictions:
    """The tower's three per-level lists -> ``DensePredictions`` (empty centerness list -> None)."""
    ctr = cat_levels(centerness, num_anchors).squeeze(-1) if centerness else None
    return DensePredictions(cat_levels(logits, num_anchors), cat_levels(bbox_reg, num_anchors), ctr)
