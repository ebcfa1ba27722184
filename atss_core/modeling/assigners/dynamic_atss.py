"""Dynamic ATSS assignment: ATSS on predicted + anchor IoUs (atss_heads §8.2).

ZTX-100/DLA-Combined-IoUs adds the IoU of each anchor's current (detached,
decoded) prediction to its anchor IoU, 1:1 and with no schedule: "dynamic"
only because the predictions change as the network trains. Candidates are
still the anchors nearest each gt centre; ``POSITIVE_TYPE`` is ignored.
"""
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from atss_core.structures.boxlist_ops import box_iou

from .atss import adaptive_positives, background, best_positive_gt


class DynamicAssignment(NamedTuple):
    """``AnchorAssignment`` plus the target of the IoU branch and of the QFL.

    labels (A,) int64: 1..C class, 0 background. matched_idx (A,): gt index or -1.
    matched_boxes (A, 4): the matched gt of positives, zeros elsewhere.
    pred_ious (A,): +1 IoU between the anchor's predicted box and its matched
    gt for positives, 0 elsewhere.
    """

    labels: Tensor
    matched_idx: Tensor
    matched_boxes: Tensor
    pred_ious: Tensor


@torch.no_grad()
def dynamic_atss_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor,
    topk: int = 9,
    num_anchors_per_loc: int = 1,
) -> DynamicAssignment:
    """
    1. Candidates: per level, the topk * num_anchors_per_loc anchors nearest
       the gt centre -> (K, G).
    2. P = IoU(predicted boxes, gts), Aiou = IoU(anchors, gts), both +1 (A, G).
    3. Threshold per gt: mean(P) + mean(Aiou) + std(P) + std(Aiou) over the
       candidates (unbiased stds); positive if P + Aiou >= threshold and the
       anchor centre is inside the gt.
    4. An anchor positive for several gts takes the one of highest P + Aiou.

    Args:
        anchors (A, 4), levels concatenated; num_per_level [L].
        gt_boxes (G, 4) xyxy; gt_labels (G,) in 1..C.
        pred_boxes (A, 4): the anchors' decoded predictions, detached, not clipped.
    """
    if len(gt_boxes) == 0:
        return DynamicAssignment(*background(len(anchors), gt_boxes), anchors.new_zeros(len(anchors)))
    pred_ious = box_iou(pred_boxes, gt_boxes, box_offset=1)  # (A, G)
    anchor_ious = box_iou(anchors, gt_boxes, box_offset=1)
    is_pos = adaptive_positives(anchors, num_per_level, gt_boxes, [pred_ious, anchor_ious], topk * num_anchors_per_loc)
    out = best_positive_gt(pred_ious + anchor_ious, is_pos, gt_boxes, gt_labels)
    matched_pred_iou = pred_ious.gather(1, out.matched_idx.clamp(min=0)[:, None])[:, 0]
    return DynamicAssignment(*out, torch.where(out.labels > 0, matched_pred_iou, torch.zeros_like(matched_pred_iou)))
