"""Shared dense post-processing with the ATSS score: atss_heads §7 and check C13."""
import math

import pytest
import torch

from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.dense_heads.postprocess import DensePostProcessor, as_is, cls_times_objectness
from atss_core.modeling.utils import DensePredictions

CERTAIN = 30.0  # a centerness logit whose sigmoid is 1.0 in float32


def _logit(p):
    return math.log(p / (1 - p))


def _preds(cls_probs, ctr_logits, num_classes=3):
    """One image; cls_probs: {(anchor, class0): prob}, everything else p = 1e-4."""
    r = len(ctr_logits)
    cls = torch.full((1, r, num_classes), _logit(1e-4))
    for (a, c), p in cls_probs.items():
        cls[0, a, c] = _logit(p)
    return DensePredictions(cls, torch.zeros(1, r, 4), torch.tensor([ctr_logits]))


def _post(**kw):
    kw.setdefault("detections_per_img", 100)
    return DensePostProcessor(BoxCoder("BOX"), **kw)


def _far_apart(n):
    """n non-overlapping 10x10 anchors (zero deltas decode to the anchors)."""
    xy = torch.arange(n, dtype=torch.float32)[:, None] * 20
    return torch.cat([xy, torch.zeros(n, 1), xy + 9, torch.full((n, 1), 9.0)], dim=1)


def test_c13_threshold_is_on_the_raw_class_probability():
    preds = _preds({(0, 0): 0.04, (1, 1): 0.36}, [CERTAIN, _logit(0.25)])
    (out,) = _post()(preds, _far_apart(2), [2], [(100, 100)])
    assert len(out) == 1
    assert out.get_field("scores").item() == pytest.approx(0.3, abs=1e-5)  # sqrt(0.36 * 0.25)
    assert out.get_field("labels").tolist() == [2] and out.get_field("labels").dtype == torch.int64
    assert out.bbox[0].tolist() == [20.0, 0.0, 29.0, 9.0]


def test_c13_class_aware_nms():
    anchors = torch.tensor([[0.0, 0, 9, 9], [0.0, 0, 9, 14]])  # +1 IoU 100/150 > 0.6
    same = _preds({(0, 0): 0.81, (1, 0): 0.64}, [CERTAIN, CERTAIN])
    (out,) = _post(nms_thresh=0.6)(same, anchors, [2], [(100, 100)])
    assert out.get_field("scores").tolist() == pytest.approx([0.9])
    assert out.bbox.tolist() == [[0.0, 0.0, 9.0, 9.0]]
    other = _preds({(0, 0): 0.81, (1, 2): 0.64}, [CERTAIN, CERTAIN])
    (out,) = _post(nms_thresh=0.6)(other, anchors, [2], [(100, 100)])
    assert sorted(out.get_field("labels").tolist()) == [1, 3]
    # At 0.7 the same-class pair survives: suppression needs IoU > thr.
    (out,) = _post(nms_thresh=0.7)(same, anchors, [2], [(100, 100)])
    assert len(out) == 2


def test_c13_cap_keeps_exactly_the_top_100():
    probs = {(i, 0): 0.1 + 0.008 * i for i in range(105)}
    (out,) = _post()(_preds(probs, [CERTAIN] * 105), _far_apart(105), [105], [(100, 4000)])
    assert len(out) == 100
    kept = sorted(out.get_field("scores").tolist())
    assert kept[0] == pytest.approx(math.sqrt(0.1 + 0.008 * 5), abs=1e-6)


def test_cap_keeps_ties_at_the_cut():
    probs = {(i, 0): 0.5 for i in range(5)}
    (out,) = _post(detections_per_img=3)(_preds(probs, [CERTAIN] * 5), _far_apart(5), [5], [(100, 400)])
    assert len(out) == 5


def test_pre_nms_top_n_ranks_by_cls_times_centerness_per_level():
    # Level 0: anchors 0-3; level 1: anchors 4-5. Class probs favour 0 and 1, centerness favours 2 and 3.
    probs = {(0, 0): 0.9, (1, 0): 0.8, (2, 0): 0.3, (3, 0): 0.25, (4, 0): 0.2, (5, 0): 0.1}
    ctr = [_logit(0.1), _logit(0.1), CERTAIN, CERTAIN, CERTAIN, CERTAIN]
    (out,) = _post(pre_nms_top_n=2)(_preds(probs, ctr), _far_apart(6), [4, 2], [(100, 400)])
    # Level 0 keeps anchors 2, 3 (0.3, 0.25 > 0.09, 0.08); level 1 keeps both.
    assert sorted(out.bbox[:, 0].tolist()) == [40.0, 60.0, 80.0, 100.0]


def test_output_size_clip_and_batch_independence():
    anchors = torch.tensor([[-5.0, -5, 30, 30], [50, 50, 200, 90]])
    cls = {(0, 0): 0.9, (1, 1): 0.8}
    p0 = _preds(cls, [CERTAIN, CERTAIN])
    p1 = _preds({(1, 2): 0.7}, [CERTAIN, CERTAIN])
    batch = DensePredictions(*(torch.cat([a, b]) for a, b in zip(p0, p1)))
    sizes = [(60, 80), (100, 120)]  # (h, w)
    out = _post()(batch, anchors, [2], sizes)
    assert [o.size for o in out] == [(80, 60), (120, 100)]
    assert out[0].bbox.tolist() == [[0.0, 0.0, 30.0, 30.0], [50.0, 50.0, 79.0, 59.0]]
    (alone,) = _post()(p1, anchors, [2], sizes[1:])
    assert torch.equal(out[1].bbox, alone.bbox) and out[1].get_field("labels").tolist() == [3]


def test_without_nms_duplicates_survive():
    anchors = torch.tensor([[0.0, 0, 9, 9], [0.0, 0, 9, 9]])
    preds = _preds({(0, 0): 0.81, (1, 0): 0.64}, [CERTAIN, CERTAIN])
    (out,) = _post(apply_nms=False)(preds, anchors, [2], [(100, 100)])
    assert len(out) == 2


def test_no_candidates_gives_empty_boxlists():
    out = _post()(_preds({}, [CERTAIN] * 3), _far_apart(3), [3], [(50, 50)])
    assert len(out[0]) == 0 and out[0].get_field("scores").shape == (0,)


def test_threshold_on_the_joint_score_drops_confident_classes_of_unlikely_objects():
    # dw.md §11.11: joint [[0.04, 0.18], [0.054, 0.009]]; (0, class 0) has cls 0.2 > 0.05 but joint 0.04.
    preds = _preds({(0, 0): 0.2, (0, 1): 0.9, (1, 0): 0.06, (1, 1): 0.01}, [_logit(0.2), _logit(0.9)], 2)
    post = _post(rank_score=cls_times_objectness, output_score=as_is, threshold_rank=True, box_offset=0)
    (out,) = post(preds, _far_apart(2), [2], [(100, 100)])
    got = sorted(zip(out.get_field("scores").tolist(), out.get_field("labels").tolist(), out.bbox[:, 0].tolist()))
    assert [(round(s, 5), lab, x) for s, lab, x in got] == [(0.054, 1, 20.0), (0.18, 2, 0.0)]


def test_nms_free_keeps_duplicates_and_exactly_the_best_k_in_order():
    # o2f.md C9: joint P0 [0.45, 0.10], P1 [0.04, 0.30]; identical boxes are not suppressed.
    anchors = torch.tensor([[0.0, 0, 8, 8], [0.0, 0, 8, 8]])
    preds = _preds({(0, 0): 0.9, (0, 1): 0.2, (1, 0): 0.08, (1, 1): 0.6}, [0.0, 0.0], 2)
    kw = dict(rank_score=cls_times_objectness, output_score=as_is, threshold_rank=True, nms_thresh=None)
    (out,) = _post(**kw)(preds, anchors, [2], [(100, 100)])
    assert out.get_field("scores").tolist() == pytest.approx([0.45, 0.30, 0.10], abs=1e-6)
    assert out.get_field("labels").tolist() == [1, 2, 2]
    (out,) = _post(detections_per_img=2, **kw)(preds, anchors, [2], [(100, 100)])
    assert out.get_field("scores").tolist() == pytest.approx([0.45, 0.30], abs=1e-6)
    # Ties at the cut are not kept beyond the cap (unlike the NMS path's kthvalue rule).
    ties = _preds({(i, 0): 0.5 for i in range(5)}, [CERTAIN] * 5)
    (out,) = _post(detections_per_img=3, **kw)(ties, _far_apart(5), [5], [(100, 400)])
    assert len(out) == 3
