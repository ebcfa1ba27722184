"""Dynamic ATSS assignment: atss_heads §8.2 and check C14."""
import math
import statistics

import pytest
import torch

from atss_core.modeling.anchors import AnchorGenerator
from atss_core.modeling.assigners import atss_assign, dynamic_atss_assign
from atss_core.modeling.assigners.atss import adaptive_positives, atss_thresholds
from atss_core.modeling.box_coders import BoxCoder

P_C14 = [0.6, 0.1, 0.0, 0.9, 0.6, 0.0]
A_C14 = [0.7, 0.2, 0.5, 0.5, 0.1, 0.1]
GT = torch.tensor([[4.0, 5.0, 22.0, 15.0]])


def _c5_anchors():
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    return gen([torch.empty(1, 0, 4, 4), torch.empty(1, 0, 2, 2)])


def _six_inside_candidates():
    """Six 16 px anchors centred inside a 100 px gt, one level, so topk=6 takes them all."""
    centres = torch.tensor([[30.0, 30.0], [40, 30], [50, 30], [30, 50], [40, 50], [50, 50]], dtype=torch.float64)
    anchors = torch.cat([centres - 7.5, centres + 7.5], dim=1)
    return anchors, torch.tensor([[0.0, 0.0, 99.0, 99.0]], dtype=torch.float64)


def test_c14_threshold_adds_the_two_stds():
    p = torch.tensor(P_C14, dtype=torch.float64)[:, None]
    a = torch.tensor(A_C14, dtype=torch.float64)[:, None]
    assert statistics.mean(P_C14) == pytest.approx(0.366667, abs=1e-6)
    assert statistics.stdev(P_C14) == pytest.approx(0.382971, abs=1e-6)
    assert statistics.stdev(A_C14) == pytest.approx(0.250998, abs=1e-6)
    assert atss_thresholds(p, a).item() == pytest.approx(1.350636, abs=1e-6)
    # Not mean + std of the sum S (1.247389), not plain ATSS on the anchor IoU (0.600998).
    assert atss_thresholds(p + a).item() == pytest.approx(1.247389, abs=1e-6)
    assert atss_thresholds(a).item() == pytest.approx(0.600998, abs=1e-6)


def test_c14_positives():
    anchors, gt = _six_inside_candidates()
    p = torch.tensor(P_C14, dtype=torch.float64)[:, None]
    a = torch.tensor(A_C14, dtype=torch.float64)[:, None]
    select = lambda ious: adaptive_positives(anchors, [6], gt, ious, 6)[:, 0].nonzero().flatten().tolist()
    assert select([p, a]) == [3]
    assert select([p + a]) == [0, 3]
    assert select([a]) == [0]


def test_zero_deltas_give_the_atss_assignment_on_c5():
    anchors, per_level = _c5_anchors()
    pred = BoxCoder("BOX").decode(torch.zeros(20, 4), anchors)
    out = dynamic_atss_assign(anchors, per_level, GT, torch.tensor([7]), pred, topk=2)
    assert out.labels.nonzero().flatten().tolist() == [5] and out.labels[5].item() == 7
    assert out.matched_boxes[5].tolist() == GT[0].tolist() and out.matched_idx[5].item() == 0
    # The IoU target is the predicted box's +1 IoU: here the anchor's, 176/289.
    assert out.pred_ious[5].item() == pytest.approx(176 / 289, abs=1e-6)
    assert out.pred_ious.count_nonzero().item() == 1


def _iou_plus_one(a, b):
    """+1 IoU of two boxes, plain Python floats."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)
    return iw * ih / (area(a) + area(b) - iw * ih)


def _reference(anchors, per_level, gts, labels, preds, topk):
    """atss_heads §8.2 written per gt with Python lists, as the original loops."""
    anchors, gts, preds = anchors.tolist(), gts.tolist(), preds.tolist()
    p = [[_iou_plus_one(x, g) for g in gts] for x in preds]
    a = [[_iou_plus_one(x, g) for g in gts] for x in anchors]
    best, gt_of = [-math.inf] * len(anchors), [0] * len(anchors)
    for g, box in enumerate(gts):
        gcx, gcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cand, start = [], 0
        for n in per_level:
            dist = [math.hypot((x[0] + x[2]) / 2 - gcx, (x[1] + x[3]) / 2 - gcy) for x in anchors[start:start + n]]
            cand += [start + i for i in sorted(range(n), key=dist.__getitem__)[:topk]]
            start += n
        cp, ca = [p[i][g] for i in cand], [a[i][g] for i in cand]
        thr = statistics.mean(cp) + statistics.mean(ca) + statistics.stdev(cp) + statistics.stdev(ca)
        for i in cand:
            cx, cy = (anchors[i][0] + anchors[i][2]) / 2, (anchors[i][1] + anchors[i][3]) / 2
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            s = p[i][g] + a[i][g]
            if s >= thr and inside and s > best[i]:
                best[i], gt_of[i] = s, g
    out_labels = [labels[gt_of[i]] if best[i] > -math.inf else 0 for i in range(len(anchors))]
    out_ious = [p[i][gt_of[i]] if best[i] > -math.inf else 0.0 for i in range(len(anchors))]
    return out_labels, out_ious


@pytest.mark.parametrize("seed", range(4))
def test_matches_a_per_gt_reference_on_random_scenes(seed):
    g = torch.Generator().manual_seed(seed)
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    anchors, per_level = gen([torch.empty(1, 0, 8, 8), torch.empty(1, 0, 4, 4)])
    anchors = anchors.double()
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 40
    gts = torch.cat([xy, xy + 8 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 30], dim=1)
    labels = torch.tensor([3, 1, 4, 2])
    deltas = torch.randn(len(anchors), 4, generator=g, dtype=torch.float64) * 0.5
    preds = BoxCoder("BOX").decode(deltas, anchors)
    out = dynamic_atss_assign(anchors, per_level, gts, labels, preds, topk=4)
    ref_labels, ref_ious = _reference(anchors, per_level, gts, labels.tolist(), preds, topk=4)
    assert out.labels.tolist() == ref_labels
    assert out.pred_ious.tolist() == pytest.approx(ref_ious, abs=1e-9)
    assert (out.labels > 0).sum() >= 4  # the scenes do exercise the rule


def test_predictions_change_the_choice_between_gts():
    # Two identical gts: the anchor IoU ties, so the predicted IoU decides.
    anchors, per_level = _c5_anchors()
    gts = torch.tensor([[4.0, 5.0, 22.0, 15.0], [4.0, 5.0, 22.0, 16.0]])
    pred = BoxCoder("BOX").decode(torch.zeros(20, 4), anchors)
    pred[5] = gts[1]
    out = dynamic_atss_assign(anchors, per_level, gts, torch.tensor([2, 9]), pred, topk=2)
    assert out.labels[5].item() == 9 and out.pred_ious[5].item() == pytest.approx(1.0)
    assert atss_assign(anchors, per_level, gts, torch.tensor([2, 9]), topk=2).labels[5].item() == 9
    pred[5] = gts[0]
    out = dynamic_atss_assign(anchors, per_level, gts, torch.tensor([2, 9]), pred, topk=2)
    assert out.labels[5].item() == 2 and out.pred_ious[5].item() == pytest.approx(1.0)


def test_zero_gt_is_all_background():
    anchors, per_level = _c5_anchors()
    out = dynamic_atss_assign(anchors, per_level, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), anchors)
    assert out.labels.tolist() == [0] * 20 and out.matched_idx.tolist() == [-1] * 20
    assert out.pred_ious.tolist() == [0.0] * 20 and out.matched_boxes.shape == (20, 4)
