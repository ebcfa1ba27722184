"""Dense detections -> per-image BoxLists, shared by every anchor/point head (atss_heads §7).

Per level and image: keep (anchor, class) pairs whose class probability (or,
for the mmdet heads with an objectness branch, whose ranking score) is
strictly above ``pre_nms_thresh``, take the ``pre_nms_top_n`` best by a
head-specific ranking score, decode, clip. Then per image over all levels:
class-aware NMS (or none, for NMS-free heads) and a cap of
``detections_per_img``. The head supplies ``rank_score`` (what is ranked) and
``output_score`` (what is reported).
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from atss_core.config import resolve_box_offset
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.utils import DensePredictions
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.boxlist_ops import boxlist_ml_nms, remove_small_boxes

RankScore = Callable[[Tensor, Optional[Tensor]], Tensor]


def cls_times_centerness(cls_prob: Tensor, centerness_logits: Optional[Tensor]) -> Tensor:
    """ATSS/FCOS ranking: cls_prob (N, R, C) * sigmoid(centerness) (N, R) -> (N, R, C)."""
    return cls_prob * centerness_logits.sigmoid()[..., None]


def cls_prob_only(cls_prob: Tensor, centerness_logits: Optional[Tensor]) -> Tensor:
    """RetinaNet ranking: the class probability alone (N, R, C); the head has no centerness."""
    return cls_prob


def cls_times_objectness(cls_prob: Tensor, objectness_logits: Optional[Tensor]) -> Tensor:
    """DW/O2F joint score: cls_prob (N, R, C) * sigmoid(objectness) (N, R) -> (N, R, C).

    The same product as :func:`cls_times_centerness`; the 1-channel branch of
    these heads is an objectness, not a centerness (dw.md §2.2, o2f.md §1).
    """
    return cls_times_centerness(cls_prob, objectness_logits)


def as_is(score: Tensor) -> Tensor:
    """``output_score`` that reports the ranking score unchanged (RetinaNet)."""
    return score


class DensePostProcessor:
    """
    Args:
        box_coder: decodes ``bbox_reg`` against anchors.
        rank_score: (cls_prob (N, R, C), centerness logits (N, R) or None) -> (N, R, C).
        output_score: maps the ranking score to the reported ``scores`` (ATSS: sqrt).
        pre_nms_thresh: strict threshold on the class probability.
        pre_nms_top_n: candidates kept per level and image.
        nms_thresh: class-aware NMS IoU threshold (suppress iff IoU > thr);
            None = NMS-free (O2F): sort by score, keep exactly the first
            ``detections_per_img``.
        detections_per_img: final cap; with NMS, ties at the cut may keep
            more (kthvalue, as the ATSS family).
        min_size: minimum box side (+box_offset) after clipping.
        apply_nms: False skips NMS and the cap (TTA merges first).
        box_offset: +1 pixel convention of the output BoxLists (spec C4).
        rank_locations: take the ``pre_nms_top_n`` locations with the highest
            best-class ``rank_score`` first, then threshold each of their
            classes (mmdet heads, dsla §4); False ranks the thresholded
            (location, class) pairs (ATSS family).
        threshold_rank: apply ``pre_nms_thresh`` to ``rank_score`` instead of
            the class probability (DW, O2F: the joint cls x objectness).
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        rank_score: RankScore = cls_times_centerness,
        output_score: Callable[[Tensor], Tensor] = torch.sqrt,
        pre_nms_thresh: float = 0.05,
        pre_nms_top_n: int = 1000,
        nms_thresh: Optional[float] = 0.6,
        detections_per_img: int = 100,
        min_size: float = 0,
        apply_nms: bool = True,
        box_offset: int = 1,
        rank_locations: bool = False,
        threshold_rank: bool = False,
    ):
        self.box_coder = box_coder
        self.rank_score = rank_score
        self.output_score = output_score
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_size = min_size
        self.apply_nms = apply_nms
        self.box_offset = box_offset
        self.rank_locations = rank_locations
        self.threshold_rank = threshold_rank

    @classmethod
    def from_config(cls, cfg, head_cfg, box_coder: BoxCoder, **kwargs) -> "DensePostProcessor":
        """The keys every dense head shares: ``head_cfg`` (a ``MODEL.<HEAD>`` node)
        ``.{INFERENCE_TH, PRE_NMS_TOP_N, NMS_TH}``, ``TEST.DETECTIONS_PER_IMG`` and the
        box offset (spec C4); ``kwargs`` are the method's own arguments (rank_score, ...)."""
        return cls(
            box_coder,
            pre_nms_thresh=head_cfg.INFERENCE_TH,
            pre_nms_top_n=head_cfg.PRE_NMS_TOP_N,
            nms_thresh=head_cfg.NMS_TH,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMG,
            box_offset=resolve_box_offset(cfg),
            **kwargs,
        )

    def select_level(self, predictions: DensePredictions, anchors: Tensor) -> Tuple[Tensor, ...]:
        """Top candidates of one level for every image.

        predictions: (N, n, ·) rows of the level; anchors (n, 4).
        Returns boxes (N, k, 4), scores (N, k), labels (N, k) in 1..C, and
        valid (N, k): False for rows whose class probability is not above the
        threshold (an image with fewer than k candidates).
        """
        n_img, n, c = predictions.cls_logits.shape
        cls_prob = predictions.cls_logits.sigmoid()
        rank = self.rank_score(cls_prob, predictions.centerness)
        candidate = ((rank if self.threshold_rank else cls_prob) > self.pre_nms_thresh).reshape(n_img, n * c)
        if self.rank_locations:
            top_loc = rank.max(dim=2).values.topk(min(self.pre_nms_top_n, n), dim=1).indices  # (N, k)
            flat_idx = (top_loc[..., None] * c + torch.arange(c, device=top_loc.device)).reshape(n_img, -1)
            top_rank = rank.reshape(n_img, n * c).gather(1, flat_idx)
        else:
            # Non-candidates rank below every candidate, then are dropped by ``valid``.
            rank = rank.reshape(n_img, n * c).masked_fill(~candidate, -1.0)
            top_rank, flat_idx = rank.topk(min(self.pre_nms_top_n, n * c), dim=1)
        valid = candidate.gather(1, flat_idx)
        loc = flat_idx // c
        deltas = predictions.bbox_reg.gather(1, loc[..., None].expand(-1, -1, 4))
        boxes = self.box_coder.decode(deltas, anchors[loc])
        return boxes, self.output_score(top_rank.clamp(min=0)), flat_idx % c + 1, valid

    def __call__(
        self,
        predictions: DensePredictions,
        anchors: Tensor,
        num_per_level: Sequence[int],
        image_sizes: Sequence[Tuple[int, int]],
    ) -> List[BoxList]:
        """
        Args:
            predictions: (N, R, ·) for the batch; anchors (R, 4) shared by all images.
            num_per_level: rows per level [L], summing to R.
            image_sizes: N (h, w) of the unpadded images.
        Returns:
            N BoxLists of size (w, h) with fields "scores" (float) and "labels" (int64).
        """
        per_level, start = [], 0
        for n in num_per_level:
            per_level.append(self.select_level(predictions.rows(start, start + n), anchors[start:start + n]))
            start += n
        boxes, scores, labels, valid = (torch.cat(parts, dim=1) for parts in zip(*per_level))
        results = []
        for i, (h, w) in enumerate(image_sizes):
            keep = valid[i]
            boxlist = BoxList(boxes[i][keep], (w, h), mode="xyxy", box_offset=self.box_offset)
            boxlist.add_field("scores", scores[i][keep])
            boxlist.add_field("labels", labels[i][keep])
            boxlist = remove_small_boxes(boxlist.clip_to_image(remove_empty=False), self.min_size)
            results.append(self.select_over_all_levels(boxlist) if self.apply_nms else boxlist)
        return results

    def select_over_all_levels(self, boxlist: BoxList) -> BoxList:
        """Class-aware NMS, then keep scores >= the ``detections_per_img``-th largest;
        NMS-free: the ``detections_per_img`` best, sorted by descending score."""
        if self.nms_thresh is None:
            scores = boxlist.get_field("scores")
            order = scores.argsort(descending=True, stable=True)
            if self.detections_per_img > 0:
                order = order[: self.detections_per_img]
            return boxlist[order]
        return keep_top_scores(boxlist_ml_nms(boxlist, self.nms_thresh), self.detections_per_img)


def keep_top_scores(boxlist: BoxList, max_num: int) -> BoxList:
    """Keep scores >= the ``max_num``-th largest (ties at the cut may keep more); <= 0 keeps all."""
    num = len(boxlist)
    if num > max_num > 0:
        scores = boxlist.get_field("scores")
        kth = torch.kthvalue(scores, num - max_num + 1).values
        boxlist = boxlist[scores >= kth]
    return boxlist
