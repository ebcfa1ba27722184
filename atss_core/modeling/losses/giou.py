"""Generalized IoU loss on decoded boxes (sfzhang15/ATSS ``ATSSLossComputation.GIoULoss``).

Continuous areas (no +1), unlike the rest of the ATSS family (atss_heads §6);
eps is added to union and enclosing area. The mmdetection-family heads use
:func:`atss_core.structures.boxlist_ops.iou_and_giou` instead (eps as a floor).
"""
from torch import Tensor

GIOU_EPS = 1e-7


def giou_loss(pred_boxes: Tensor, target_boxes: Tensor, eps: float = GIOU_EPS) -> Tensor:
    """Per-box ``1 - GIoU``: pred_boxes, target_boxes (M, 4) xyxy -> (M,).

    Predicted boxes with x2 < x1 (or y2 < y1) are collapsed to zero width
    (height); target boxes are used as given. Gradient flows to both inputs;
    callers pass detached targets.
    """
    px1, py1, px2, py2 = pred_boxes.unbind(-1)
    tx1, ty1, tx2, ty2 = target_boxes.unbind(-1)
    px2 = px2.maximum(px1)
    py2 = py2.maximum(py1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)
    inter = (px2.minimum(tx2) - px1.maximum(tx1)).clamp(min=0) * (py2.minimum(ty2) - py1.maximum(ty1)).clamp(min=0)
    enclosing = (px2.maximum(tx2) - px1.minimum(tx1)) * (py2.maximum(ty2) - py1.minimum(ty1)) + eps
    union = pred_area + target_area - inter + eps
    return 1 - (inter / union - (enclosing - union) / enclosing)
