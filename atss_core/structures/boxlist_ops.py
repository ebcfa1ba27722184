"""Operations on ``BoxList``s and plain box tensors (xyxy)."""
from typing import Tuple

import torch
from torch import Tensor

from .bounding_box import BoxList


def box_iou(boxes1, boxes2, box_offset=1):
    """IoU matrix of xyxy boxes ``boxes1`` (N, 4) and ``boxes2`` (M, 4) -> (N, M).

    ``box_offset`` = 1 is the inclusive-pixel convention of the ATSS family
    (width = x2 - x1 + 1, used by sfzhang15/ATSS boxlist_iou); 0 is continuous.
    """
    o = box_offset
    area1 = (boxes1[:, 2] - boxes1[:, 0] + o) * (boxes1[:, 3] - boxes1[:, 1] + o)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + o) * (boxes2[:, 3] - boxes2[:, 1] + o)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt + o).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


# mmdetection ``bbox_overlaps`` / ``GIoULoss`` default.
MMDET_EPS = 1e-6


def iou_and_giou(boxes1: Tensor, boxes2: Tensor, eps: float = MMDET_EPS) -> Tuple[Tensor, Tensor]:
    """IoU and GIoU of xyxy boxes (..., 4) and (..., 4), broadcast -> two (...) tensors.

    mmdetection 2.x ``bbox_overlaps`` (aligned) as the DSLA, DW and O2F heads use it:
    continuous areas, union and enclosing area floored at eps (equal boxes give
    exactly 1), no clamping of inverted boxes. Pairwise: pass (A, 1, 4) and (1, G, 4).
    """
    lt1, rb1, lt2, rb2 = boxes1[..., :2], boxes1[..., 2:], boxes2[..., :2], boxes2[..., 2:]
    area1 = (rb1 - lt1).prod(dim=-1)
    area2 = (rb2 - lt2).prod(dim=-1)
    overlap = (torch.minimum(rb1, rb2) - torch.maximum(lt1, lt2)).clamp(min=0).prod(dim=-1)
    union = (area1 + area2 - overlap).clamp(min=eps)
    iou = overlap / union
    enclose_area = (torch.maximum(rb1, rb2) - torch.minimum(lt1, lt2)).clamp(min=0).prod(dim=-1).clamp(min=eps)
    return iou, iou - (enclose_area - union) / enclose_area


def boxlist_iou(boxlist1, boxlist2):
    """IoU (N, M) of two xyxy BoxLists of the same image and convention."""
    if boxlist1.size != boxlist2.size:
        raise ValueError(f"boxlists must belong to the same image, got {boxlist1} and {boxlist2}")
    if boxlist1.box_offset != boxlist2.box_offset:
        raise ValueError("boxlists use different box_offset conventions")
    return box_iou(boxlist1.convert("xyxy").bbox, boxlist2.convert("xyxy").bbox, boxlist1.box_offset)


def cat_boxlist(bboxes):
    """Concatenate BoxLists of one image (same size, mode, convention, fields)."""
    if not bboxes:
        raise ValueError("cat_boxlist needs at least one BoxList")
    first = bboxes[0]
    fields = set(first.fields())
    for b in bboxes[1:]:
        if (b.size, b.mode, b.box_offset) != (first.size, first.mode, first.box_offset):
            raise ValueError(f"cannot concatenate {first} and {b}")
        if set(b.fields()) != fields:
            raise ValueError(f"field mismatch: {sorted(fields)} vs {sorted(b.fields())}")
    out = BoxList(torch.cat([b.bbox for b in bboxes], dim=0), first.size, first.mode, first.box_offset)
    for f in fields:
        out.add_field(f, torch.cat([b.get_field(f) for b in bboxes], dim=0))
    return out


def remove_small_boxes(boxlist, min_size):
    """Keep boxes whose width and height (with the box_offset) are >= min_size."""
    o = boxlist.box_offset
    b = boxlist.convert("xyxy").bbox
    ws, hs = b[:, 2] - b[:, 0] + o, b[:, 3] - b[:, 1] + o
    return boxlist[(ws >= min_size) & (hs >= min_size)]


def _apply_nms(boxlist, keep, max_proposals):
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep]


def boxlist_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores"):
    """Single-class NMS; kept boxes come back in ascending index order.

    ``nms_thresh`` <= 0 returns the input unchanged (as the original).
    """
    from atss_core.layers import nms

    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    b = boxlist.convert("xyxy")
    keep = nms(b.bbox, b.get_field(score_field), nms_thresh, box_offset=b.box_offset)
    return _apply_nms(b, keep, max_proposals).convert(mode)


def boxlist_ml_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores", label_field="labels"):
    """Class-aware NMS in one call: boxes of different labels never suppress each other."""
    from atss_core.layers import ml_nms

    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    b = boxlist.convert("xyxy")
    keep = ml_nms(b.bbox, b.get_field(score_field), b.get_field(label_field), nms_thresh, box_offset=b.box_offset)
    return _apply_nms(b, keep, max_proposals).convert(mode)
