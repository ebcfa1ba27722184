"""Test-time augmentation: multi-scale and horizontal-flip passes, then one merge
(framework spec 7.4, C26; sfzhang15/ATSS ``engine/bbox_aug.py``, ``bbox_aug_vote.py``).

Each pass resizes the raw images (and maybe flips them), runs the model and
maps its boxes back into the frame of the first (identity) pass. The merge is
either class-aware NMS plus the final cap (``VOTE`` off; the ATSS head then
skips its own NMS) or, with ``VOTE``, per-class NMS / box voting / soft voting
plus a ``PRE_NMS_TOP_N`` cap. Everything runs on the model's device, CPU included.
"""
import functools
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from atss_core.config.validation import head_namespace
from atss_core.data import transforms as T
from atss_core.modeling.dense_heads.postprocess import keep_top_scores
from atss_core.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList
from atss_core.structures.boxlist_ops import box_iou, boxlist_ml_nms, cat_boxlist
from atss_core.structures.image_list import to_image_list

MERGE_TYPES = ("nms", "vote", "soft-vote")
# The vote path keeps MAX_SIZE_TEST below this scale (a constant of bbox_aug_vote.py).
_VOTE_LARGE_SCALE = 800


class AugPass(NamedTuple):
    """One forward pass: shorter side ``min_size``, longer side capped at ``max_size``.

    ``area_range`` = (r_min, r_max): keep boxes with r_min² < area < r_max²,
    the area measured in this pass's pixels (vote path, extra scales only).
    """

    min_size: int
    max_size: int
    hflip: bool = False
    area_range: Optional[Tuple[float, float]] = None


def remove_boxes(boxlist: BoxList, area_range: Tuple[float, float]) -> BoxList:
    """Keep boxes whose area (with ``box_offset``) is strictly inside (r_min², r_max²)."""
    r_min, r_max = area_range
    area = boxlist.area()
    return boxlist[(area > r_min * r_min) & (area < r_max * r_max)]


@torch.no_grad()
def box_vote(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    vote_thresh: float,
    soft_score_thresh: Optional[float] = None,
    box_offset: int = 1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Greedy per-class box voting.

    In descending score order, the best unclustered box takes every unclustered
    box of its class with IoU >= ``vote_thresh`` (itself included) as its
    cluster. A cluster gives one box: the score-weighted mean of its members
    (a lone box is kept as is), scored with the cluster's maximum score. With
    ``soft_score_thresh`` (soft vote), the members of clusters of two or more
    are also re-emitted with score ``s * (1 - IoU with the top)`` where that is
    >= the threshold (the top itself gets 0).

    Args:
        boxes: (n, 4) xyxy; scores: (n,); labels: (n,).
    Returns:
        boxes (m, 4), scores (m,), labels (m,), by descending score.
    """
    n = len(scores)
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    iou = box_iou(boxes, boxes, box_offset)
    iou = iou.masked_fill(labels[:, None] != labels[None, :], -1.0)  # clusters never mix classes

    # The greedy pass is sequential over clusters; a bool matrix in numpy keeps it cheap.
    similar = (iou >= vote_thresh).cpu().numpy()
    free = np.ones(n, dtype=bool)
    top_of = np.empty(n, dtype=np.int64)  # position of each box's cluster top
    for top in range(n):
        if free[top]:
            members = free & similar[top]
            members[top] = True
            top_of[members] = top
            free &= ~members
    top_of = torch.from_numpy(top_of).to(boxes.device)

    size = torch.bincount(top_of, minlength=n)
    tops = (size > 0).nonzero().squeeze(1)
    weighted = torch.zeros_like(boxes).index_add_(0, top_of, boxes * scores[:, None])
    weight = torch.zeros_like(scores).index_add_(0, top_of, scores)
    voted = torch.where((size[tops] == 1)[:, None], boxes[tops], weighted[tops] / weight[tops, None])
    out = [(voted, scores[tops], labels[tops])]
    if soft_score_thresh is not None:
        soft = scores * (1 - iou[top_of, torch.arange(n, device=boxes.device)])
        keep = (size[top_of] > 1) & (soft >= soft_score_thresh)
        out.append((boxes[keep], soft[keep], labels[keep]))
    boxes, scores, labels = (torch.cat(parts) for parts in zip(*out))
    order = scores.argsort(descending=True, stable=True)
    return boxes[order], scores[order], labels[order]


def merge_nms(boxlist: BoxList, nms_thresh: float, max_detections: int) -> BoxList:
    """``bbox_aug.py``: class-aware NMS, then the final per-image cap."""
    return keep_top_scores(boxlist_ml_nms(boxlist, nms_thresh), max_detections)


def merge_vote(
    boxlist: BoxList,
    merge_type: str,
    vote_thresh: float,
    nms_thresh: float,
    soft_score_thresh: float,
    max_detections: int,
) -> BoxList:
    """``bbox_aug_vote.py``: per-class NMS ("nms"), voting ("vote") or soft voting
    ("soft-vote"), then keep the ``max_detections`` best (ties kept)."""
    if merge_type not in MERGE_TYPES:
        raise ValueError(f"merge_type must be one of {MERGE_TYPES}, got {merge_type!r}")
    if merge_type == "nms":
        return merge_nms(boxlist, nms_thresh, max_detections)
    b = boxlist.convert("xyxy")
    boxes, scores, labels = box_vote(
        b.bbox,
        b.get_field("scores"),
        b.get_field("labels"),
        vote_thresh,
        soft_score_thresh if merge_type == "soft-vote" else None,
        b.box_offset,
    )
    merged = BoxList(boxes, b.size, mode="xyxy", box_offset=b.box_offset)
    merged.add_field("scores", scores)
    merged.add_field("labels", labels)
    return keep_top_scores(merged, max_detections)


class TestTimeAugmentation:
    """``im_detect(model, images, device)`` for ``engine.inference``.

    Args:
        passes: the passes; the first one's frame is the output frame.
        normalize: image tensor -> network input (``data.transforms.Normalize``).
        size_divisible: batch padding multiple.
        merge: BoxList of all passes of one image -> final detections.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, passes: Sequence[AugPass], normalize: Callable, size_divisible: int, merge: Callable):
        if not passes:
            raise ValueError("test-time augmentation needs at least one pass")
        self.passes = list(passes)
        self.normalize = normalize
        self.size_divisible = size_divisible
        self.merge = merge

    @classmethod
    def from_config(cls, cfg):
        """Passes and merge of ``TEST.BBOX_AUG``; the merge reads the active head's keys (C26)."""
        aug = cfg.TEST.BBOX_AUG
        namespace = head_namespace(cfg)
        if namespace is None:
            raise ValueError("TEST.BBOX_AUG.ENABLED needs exactly one MODEL.<HEAD>_ON flag set")
        head = cfg.MODEL.get(namespace, {})
        needed = ("NMS_TH", "INFERENCE_TH", "PRE_NMS_TOP_N") if aug.VOTE else ("NMS_TH",)
        missing = [f"MODEL.{namespace}.{k}" for k in needed if k not in head]
        if missing:
            raise ValueError(f"TEST.BBOX_AUG merges with the active head's keys, but {missing} do not exist")
        scales = tuple(aug.SCALES)
        ranges = [tuple(r) for r in aug.SCALE_RANGES]
        if aug.VOTE and ranges and len(ranges) != len(scales):
            raise ValueError(
                f"TEST.BBOX_AUG.SCALE_RANGES needs one [min, max] per scale of TEST.BBOX_AUG.SCALES: "
                f"got {len(ranges)} ranges for {len(scales)} scales"
            )
        if any(len(r) != 2 for r in ranges):
            raise ValueError(f"TEST.BBOX_AUG.SCALE_RANGES entries must be [min, max], got {list(aug.SCALE_RANGES)}")

        identity = AugPass(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        passes = [identity] + ([identity._replace(hflip=True)] if aug.H_FLIP else [])
        for i, scale in enumerate(scales):
            if aug.VOTE:
                max_size = cfg.INPUT.MAX_SIZE_TEST if scale < _VOTE_LARGE_SCALE else aug.MAX_SIZE
                scaled = AugPass(scale, max_size, area_range=ranges[i] if ranges else None)
            else:
                scaled = AugPass(scale, aug.MAX_SIZE)
            passes += [scaled] + ([scaled._replace(hflip=True)] if aug.SCALE_H_FLIP else [])

        if aug.VOTE:
            if aug.MERGE_TYPE not in MERGE_TYPES:
                raise ValueError(f"TEST.BBOX_AUG.MERGE_TYPE must be one of {MERGE_TYPES}, got {aug.MERGE_TYPE!r}")
            merge = functools.partial(
                merge_vote,
                merge_type=aug.MERGE_TYPE,
                vote_thresh=aug.VOTE_TH,
                nms_thresh=head.NMS_TH,
                soft_score_thresh=head.INFERENCE_TH,
                max_detections=head.PRE_NMS_TOP_N,
            )
        else:
            merge = functools.partial(merge_nms, nms_thresh=head.NMS_TH, max_detections=cfg.TEST.DETECTIONS_PER_IMG)
        return cls(passes, T.build_normalize(cfg), cfg.DATALOADER.SIZE_DIVISIBILITY, merge)

    def run_pass(self, model, images, aug_pass: AugPass, device) -> List[BoxList]:
        """Detections of one pass, unflipped, in that pass's resized-image frame."""
        steps = [T.Resize(aug_pass.min_size, aug_pass.max_size)]
        steps += [T.RandomHorizontalFlip(1.0)] if aug_pass.hflip else []
        transform = T.Compose(steps + [T.ToTensor(), self.normalize])
        batch = to_image_list([transform(image) for image in images], self.size_divisible)
        detections = model(batch.to(device))
        if aug_pass.hflip:
            detections = [d.transpose(FLIP_LEFT_RIGHT) for d in detections]
        if aug_pass.area_range is not None:
            detections = [remove_boxes(d, aug_pass.area_range) for d in detections]
        return detections

    def __call__(self, model, images, device) -> List[BoxList]:
        """
        Args:
            images: N raw PIL images (the loader's ``BBoxAugCollator`` batch).
        Returns:
            N BoxLists with "scores" and "labels" in the identity pass's frame.
        """
        per_image = [[] for _ in images]
        for aug_pass in self.passes:
            for found, detections in zip(per_image, self.run_pass(model, images, aug_pass, device)):
                found.append(detections.resize(found[0].size) if found else detections)
        return [self.merge(cat_boxlist(found)) for found in per_image]
