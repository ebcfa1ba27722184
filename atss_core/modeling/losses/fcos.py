"""FCOS box loss: IoU losses on (l, t, r, b) distances (sfzhang15/ATSS ``layers/iou_loss.py``,
atss_heads §9.1). The rest of the FCOS loss is ATSS's ``atss_loss`` with loss weight 1."""
import torch
from torch import Tensor

from atss_core.modeling.box_coders import LTRBCoder

IOU_LOSS_TYPES = ("iou", "linear_iou", "giou")
ENCLOSING_EPS = 1e-7


def ltrb_iou_loss(pred: Tensor, target: Tensor, loss_type: str = "iou") -> Tensor:
    """Per-location loss between (l, t, r, b) distances of one point: (M, 4), (M, 4) -> (M,).

    IoU = (I + 1) / (U + 1): the original's +1 smoothing, not scale-invariant,
    so values in strides and in pixels differ. "iou": -ln IoU;
    "linear_iou": 1 - IoU; "giou": 1 - (IoU - (E - U) / E), E the enclosing
    area + 1e-7.
    """
    if loss_type not in IOU_LOSS_TYPES:
        raise ValueError(f"MODEL.FCOS.IOU_LOSS_TYPE must be one of {IOU_LOSS_TYPES}, got {loss_type!r}")
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = (pl + pr) * (pt + pb) + (tl + tr) * (tt + tb) - inter
    iou = (inter + 1) / (union + 1)
    if loss_type == "iou":
        return -torch.log(iou)
    if loss_type == "linear_iou":
        return 1 - iou
    enclosing = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    enclosing = enclosing + ENCLOSING_EPS
    return 1 - (iou - (enclosing - union) / enclosing)


def fcos_box_loss(deltas: Tensor, gt_boxes: Tensor, cells: Tensor, box_coder: LTRBCoder, loss_type: str = "iou") -> Tensor:
    """``atss_loss`` box loss for FCOS: predicted vs target (l, t, r, b), both in the coder's
    units (strides with NORM_REG_TARGETS); (M, 4) each -> (M,)."""
    return ltrb_iou_loss(deltas, box_coder.encode(gt_boxes, cells), loss_type)
