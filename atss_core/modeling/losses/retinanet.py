"""RetinaNet losses (atss_heads §9.2; sfzhang15/ATSS ``modeling/rpn/retinanet/loss.py``).

Normalised per rank, with no cross-rank reduction, as the original:
classification by (#positives + #images), regression by max(1, 4 #positives).
"""
from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from atss_core.modeling.assigners.atss import AnchorAssignment
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.utils import DensePredictions


def retinanet_loss(
    predictions: DensePredictions,
    assignments: Sequence[AnchorAssignment],
    anchors: Tensor,
    box_coder: BoxCoder,
    focal_loss: Callable[[Tensor, Tensor], Tensor],
    smooth_l1_beta: float = 0.11,
    reg_norm: float = 4.0,
) -> Dict[str, Tensor]:
    """
    Args:
        predictions: cls_logits (N, R, C), bbox_reg (N, R, 4), float32; no centerness.
        assignments: N per-image ``AnchorAssignment`` (labels (R,) with -1 = ignore).
        anchors: (R, 4), shared by all images.
        box_coder: encodes the matched gts against the anchors.
        focal_loss: (logits (M, C), labels (M,) int64) -> summed sigmoid focal loss.
        smooth_l1_beta: MODEL.RETINANET.BBOX_REG_BETA.
        reg_norm: MODEL.RETINANET.BBOX_REG_WEIGHT, a divisor of the box loss.
    Returns:
        {"loss_retina_cls", "loss_retina_reg"}, scalars.
    """
    n, r, c = predictions.cls_logits.shape
    labels = torch.stack([a.labels for a in assignments])  # (N, R)
    matched_boxes = torch.stack([a.matched_boxes for a in assignments])  # (N, R, 4)
    pos = labels > 0
    num_pos = pos.sum()

    targets = box_coder.encode(matched_boxes[pos], anchors.expand(n, r, 4)[pos])  # (M, 4)
    loss_reg = F.smooth_l1_loss(predictions.bbox_reg[pos], targets, beta=smooth_l1_beta, reduction="sum")
    loss_cls = focal_loss(predictions.cls_logits.reshape(n * r, c), labels.reshape(-1))
    return {
        "loss_retina_cls": loss_cls / (num_pos + n),
        "loss_retina_reg": loss_reg / (num_pos * reg_norm).clamp(min=1),
    }
