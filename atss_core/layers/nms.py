"""Greedy non-maximum suppression under the ATSS names and argument order.

Contract shared by the compiled kernels and the pure-PyTorch references here
(kernels.md §1.3, README C5):

- boxes are xyxy; ``box_offset`` is the pixel convention of C4: 1 (ATSS
  family) makes widths ``x2 - x1 + 1`` in areas and intersections, 0 is
  continuous coordinates;
- boxes are visited in descending score order with a stable sort, so of two
  equal scores the lower index wins;
- a kept box suppresses a later one iff IoU > ``thresh`` (strict), with the
  IoU and the comparison in the box dtype, as the original CUDA kernels did;
- the result is an int64 tensor of kept indices in **ascending index order**
  (not score order), on the device of ``boxes``.

float16/bfloat16 (or mixed) inputs are promoted to float32; no gradient flows.
"""
import torch

from ._ops import compiled_op


def nms(boxes, scores, thresh, box_offset=1):
    """Single-class greedy NMS.

    Args:
        boxes (Tensor[N, 4]): xyxy boxes.
        scores (Tensor[N]): scores, higher first.
        thresh (float): suppress iff IoU > thresh.
        box_offset (int): 0 or 1, the pixel convention of the IoU.

    Returns:
        Tensor[K] int64: indices of the kept boxes, ascending.
    """
    boxes, scores = _promote(boxes, scores)
    _check_box_offset(box_offset)
    op = compiled_op("nms", boxes.device)
    if op is None:
        return nms_reference(boxes, scores, thresh, box_offset)
    return op(boxes, scores, float(thresh), float(box_offset))


def ml_nms(boxes, scores, labels, thresh, box_offset=1):
    """Class-aware greedy NMS: boxes with different labels never suppress each
    other, so the result equals per-label :func:`nms`, merged and sorted.

    Args:
        boxes (Tensor[N, 4]): xyxy boxes.
        scores (Tensor[N]): scores, higher first.
        labels (Tensor[N]): integer labels (float labels are compared as floats).
        thresh (float): suppress iff IoU > thresh.
        box_offset (int): 0 or 1, the pixel convention of the IoU.

    Returns:
        Tensor[K] int64: indices of the kept boxes, ascending.
    """
    boxes, scores = _promote(boxes, scores)
    _check_box_offset(box_offset)
    op = compiled_op("ml_nms", boxes.device)
    if op is None:
        return ml_nms_reference(boxes, scores, labels, thresh, box_offset)
    return op(boxes, scores, labels.detach(), float(thresh), float(box_offset))


def nms_reference(boxes, scores, thresh, box_offset=1):
    """Pure-PyTorch :func:`nms` (any device; float32 or float64 inputs)."""
    _check_inputs(boxes, scores)
    return _greedy_nms(boxes, scores, thresh, box_offset)


def ml_nms_reference(boxes, scores, labels, thresh, box_offset=1):
    """Pure-PyTorch :func:`ml_nms` (any device; float32 or float64 inputs)."""
    _check_inputs(boxes, scores)
    if labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"ml_nms: labels must have shape [N] with N = {boxes.shape[0]}, got {tuple(labels.shape)}")
    kept = [boxes.new_zeros(0, dtype=torch.long)]
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).view(-1)  # ascending, so ties still go to the lower index
        kept.append(members[_greedy_nms(boxes[members], scores[members], thresh, box_offset)])
    return torch.sort(torch.cat(kept)).values


def _promote(boxes, scores):
    # Replaces maskrcnn-benchmark's apex float_function: kernels take fp32/fp64.
    dtype = torch.promote_types(torch.promote_types(boxes.dtype, scores.dtype), torch.float32)
    return boxes.detach().to(dtype), scores.detach().to(dtype)


def _check_box_offset(box_offset):
    if box_offset not in (0, 1):
        raise ValueError(f"box_offset must be 0 or 1 (MODEL.BOX_OFFSET after resolution), got {box_offset!r}")


def _check_inputs(boxes, scores):
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"nms: scores must have shape [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}")
    if boxes.dtype not in (torch.float32, torch.float64) or scores.dtype != boxes.dtype:
        raise ValueError(f"nms: boxes and scores must both be float32 or float64, got {boxes.dtype} and {scores.dtype}")


_ROW_CHUNK = 1024  # bounds the float IoU block to chunk x N


def _greedy_nms(boxes, scores, thresh, box_offset):
    """Greedy pass over a precomputed suppression matrix (N^2 bools)."""
    from atss_core.structures.boxlist_ops import box_iou  # lazy: structures imports layers lazily too

    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    # thresh is cast to the box dtype, as in the compiled kernels.
    suppress = [
        (box_iou(sorted_boxes[start : start + _ROW_CHUNK], sorted_boxes, box_offset) > thresh).cpu()
        for start in range(0, len(order), _ROW_CHUNK)
    ]
    # Row i also marks boxes before it and itself; those are already decided.
    removed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i, row in enumerate(torch.cat(suppress) if suppress else []):
        if not removed[i]:
            kept.append(i)
            removed |= row
    kept = order[torch.tensor(kept, dtype=torch.long, device=boxes.device)]
    return torch.sort(kept).values
