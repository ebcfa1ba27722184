"""IoU and GIoU of decoded boxes, in the two conventions the heads need.

- :func:`giou_loss`: sfzhang15/ATSS ``ATSSLossComputation.GIoULoss`` (eps added
  to union and enclosing area; continuous areas, unlike the rest of the ATSS
  family, atss_heads §6).
- :func:`iou_and_giou`: mmdetection 2.x ``bbox_overlaps`` / ``giou_loss`` (union
  and enclosing area floored at eps, so equal boxes give exactly 1), used by the
  mmdet-family heads (DSLA, DW, O2F).
"""
from typing import Tuple

import torch
from torch import Tensor

GIOU_EPS = 1e-7
# mmdet ``bbox_overlaps`` / ``GIoULoss`` default.
MMDET_EPS = 1e-6


def iou_and_giou(boxes1: Tensor, boxes2: Tensor, eps: float = MMDET_EPS) -> Tuple[Tensor, Tensor]:
    """IoU and GIoU of xyxy boxes (..., 4) and (..., 4), broadcast -> two (...) tensors.

    mmdet ``bbox_overlaps`` (aligned): union and enclosing area floored at eps,
    no clamping of inverted boxes. Pairwise: pass (A, 1, 4) and (1, G, 4).
    """
    lt1, rb1, lt2, rb2 = boxes1[..., :2], boxes1[..., 2:], boxes2[..., :2], boxes2[..., 2:]
    area1 = (rb1 - lt1).prod(dim=-1)
    area2 = (rb2 - lt2).prod(dim=-1)
    overlap = (torch.minimum(rb1, rb2) - torch.maximum(lt1, lt2)).clamp(min=0).prod(dim=-1)
    union = (area1 + area2 - overlap).clamp(min=eps)
    iou = overlap / union
    enclose_area = (torch.maximum(rb1, rb2) - torch.minimum(lt1, lt2)).clamp(min=0).prod(dim=-1).clamp(min=eps)
    return iou, iou - (enclose_area - union) / enclose_area


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
