"""One forward flow for every dense head: tower -> anchors -> assign + loss, or post-process.

A method is its parts: the ``head`` (tower) and ``anchor_generator`` modules,
which are the only registered children (checkpoint keys ``rpn.head.*`` and
``rpn.anchor_generator.cell_anchors.N``), plus three plain callables:

- ``assign(anchors (R, 4), num_per_level [L], target BoxList, predictions)``
  -> per-image assignment (a NamedTuple with at least ``labels``), where
  ``predictions`` are that image's detached rows (R, ·), for rules that use
  the current predictions;
- ``loss(predictions (N, R, ·), assignments [N], anchors (R, 4))`` -> loss dict;
- ``postprocessor(predictions, anchors, num_per_level, image_sizes)`` -> BoxLists.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from atss_core.modeling.utils import DensePredictions, flatten_head_outputs
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList


class TargetAssigner:
    """Adapts a pure rule ``rule(anchors, num_per_level, gt_boxes, gt_labels, **inputs, **params)``
    to ``DenseHead.assign``.

    ``prediction_inputs(anchors (R, 4), predictions)`` -> dict, if given, turns
    the image's detached predictions into extra keyword inputs of the rule
    (e.g. Dynamic ATSS's decoded boxes); rules without it never see them.
    """

    def __init__(self, rule: Callable, prediction_inputs: Optional[Callable] = None, **params):
        self.rule = rule
        self.prediction_inputs = prediction_inputs
        self.params = params

    def __call__(self, anchors: Tensor, num_per_level: Sequence[int], target: BoxList, predictions=None):
        if target.mode != "xyxy":
            raise ValueError(f"targets must be xyxy BoxLists, got mode {target.mode!r}")
        boxes = target.bbox.to(anchors.device, torch.float32)
        labels = target.get_field("labels").to(anchors.device)
        inputs = {} if self.prediction_inputs is None else self.prediction_inputs(anchors, predictions)
        return self.rule(anchors, num_per_level, boxes, labels, **inputs, **self.params)

    def __repr__(self):
        return f"TargetAssigner({getattr(self.rule, '__name__', self.rule)}, {self.params})"


class DenseHead(nn.Module):
    def __init__(
        self,
        head: nn.Module,
        anchor_generator: nn.Module,
        assign: Callable,
        loss: Callable,
        postprocessor: Callable,
        num_anchors: int = 1,
    ):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.assign = assign
        self.loss = loss
        self.postprocessor = postprocessor
        self.num_anchors = num_anchors

    def forward(
        self, images: ImageList, features: Sequence[Tensor], targets: Optional[Sequence[BoxList]] = None
    ) -> Tuple[Optional[List[BoxList]], dict]:
        """
        Args:
            images: the padded batch (only ``image_sizes`` is read).
            features: L maps (N, C_in, H_l, W_l).
            targets: N xyxy BoxLists with field "labels" (training only).
        Returns:
            training: (None, loss dict); eval: (N BoxLists with "scores", "labels", {}).
        """
        outputs = self.head(features)
        anchors, num_per_level = self.anchor_generator(features)
        # Assignment, losses, decoding and NMS run in float32 (spec C18).
        with torch.autocast(device_type=anchors.device.type, enabled=False):
            predictions = flatten_head_outputs(*outputs, num_anchors=self.num_anchors).float()
            if predictions.cls_logits.shape[1] != anchors.shape[0]:
                raise RuntimeError(
                    f"head produced {predictions.cls_logits.shape[1]} rows per image but there are "
                    f"{anchors.shape[0]} anchors; check anchors per location vs the head's outputs"
                )
            if self.training:
                return None, self._losses(predictions, anchors, num_per_level, targets)
            return self.postprocessor(predictions, anchors, num_per_level, images.image_sizes), {}

    def _losses(self, predictions: DensePredictions, anchors, num_per_level, targets) -> dict:
        if targets is None:
            raise ValueError("DenseHead in training mode needs targets (a BoxList with 'labels' per image)")
        if len(targets) != predictions.cls_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {predictions.cls_logits.shape[0]} images")
        detached = predictions.detach()
        with torch.no_grad():
            assignments = [
                self.assign(anchors, num_per_level, target, detached.image(i)) for i, target in enumerate(targets)
            ]
        return self.loss(predictions, assignments, anchors)
