"""DW losses: the toy image of dw.md §11.6 with its gradients, the normalisation across
processes of §11.7, and the loss-side invariants of §11.12."""
import math

import pytest
import torch
import torchvision

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners.dw import dw_assign, negative_bag_weights, negative_probability, positive_weights
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses.dw import dw_loss, dw_loss_terms
from atss_core.modeling.utils import DensePredictions, joint_scores

F64 = torch.float64


def _t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


# ----------------------------------------------------------------------------- §11.6 toy image
def _toy():
    cls = _t([[0.5, 0.1], [0.4, 0.2], [0.3, 0.1], [0.2, 0.3]], grad=True)
    obj = _t([0.8, 0.5, 0.5, 0.4], grad=True)
    loss = _t([0.2, 0.4, 0.7, 1.5], grad=True)
    inside = torch.tensor([[True], [True], [True], [False]])
    prior = _t([[1.0], [0.6], [0.3], [0.0]])
    iou = _t([[0.8], [0.6], [0.3], [0.0]])
    s = cls * obj[:, None]
    neg_prob = negative_probability(negative_bag_weights(iou, inside), inside, torch.tensor([1]), 2)
    t = s[:, :1].detach() * torch.exp(-5 * loss.detach()[:, None])
    w = positive_weights(t, prior)[:, 0]
    pos = inside[:, 0]
    terms = dw_loss_terms(s, s[pos, 0], loss[pos], w[pos], neg_prob)
    return cls, obj, loss, s, neg_prob, t, w, terms


def test_toy_image_weights_and_losses():
    _, _, _, s, neg_prob, t, w, (cls_pos, loc, neg) = _toy()
    assert s.detach().flatten().tolist() == pytest.approx([0.4, 0.08, 0.2, 0.1, 0.15, 0.05, 0.08, 0.12])
    assert neg_prob[0, 0].item() == pytest.approx(1.9e-12, rel=0.02)
    assert neg_prob[1, 0].item() == pytest.approx(0.717949, abs=1e-6)
    assert neg_prob[2:, 0].tolist() == [1, 1] and neg_prob[:, 1].tolist() == [1, 1, 1, 1]
    negsum = (1 - neg_prob).sum().item()
    assert negsum == pytest.approx(1.282051, abs=1e-6)
    assert t[:, 0].tolist() == pytest.approx([0.147152, 0.027067, 0.0045296, 0.0000442], abs=1e-6)
    assert w.tolist() == pytest.approx([1.239329, 0.075033, 0.005609, 0], abs=1e-6)
    assert w.sum().item() == pytest.approx(1.319971, abs=1e-6)
    assert cls_pos.item() == pytest.approx(0.316747, abs=1e-6)
    assert loc.item() == pytest.approx(0.352257, abs=1e-6)
    assert neg.item() == pytest.approx(0.014155, abs=1e-6)
    total = cls_pos / 1 + loc / 1 + neg / max(1.0, negsum)
    assert (neg / negsum).item() == pytest.approx(0.011041, abs=1e-6)
    assert total.item() == pytest.approx(0.680044, abs=1e-6)


def test_toy_image_gradients_show_what_is_detached():
    cls, obj, loss, _, neg_prob, _, w, (cls_pos, loc, neg) = _toy()
    negsum = (1 - neg_prob).sum()
    (cls_pos + loc + neg / negsum).backward()
    assert loss.grad.tolist() == pytest.approx([1.549161, 0.093791, 0.007012, 0], abs=1e-6)
    assert loss.grad.tolist() == pytest.approx((1.25 * w).tolist(), abs=1e-12)
    assert cls.grad[0].tolist() == pytest.approx([-0.619664, 0.012666], abs=1e-6)
    assert obj.grad.tolist() == pytest.approx([-0.385707, -0.001302, 0.015404, 0.014175], abs=1e-6)


def test_image_without_gts_pays_only_the_negative_term():
    s = _t([[0.5, 0.1], [0.4, 0.2]]) * _t([0.8, 0.5])[:, None]
    empty = _t([])
    cls_pos, loc, neg = dw_loss_terms(s, empty, empty, empty, torch.ones_like(s))
    assert cls_pos.item() == 0 and loc.item() == 0
    assert neg.item() == pytest.approx(0.092245, abs=1e-6)
    by_hand = sum(v**2 * -math.log(1 - v) for v in s.flatten().tolist())
    assert neg.item() == pytest.approx(by_hand, rel=1e-12)


def test_scores_of_exactly_zero_and_one_give_finite_losses_and_gradients():
    s = _t([[0.0, 1.0], [1.0, 0.0]], grad=True)
    pos = s[[0, 1], [0, 0]]
    terms = dw_loss_terms(s, pos, _t([0.5, 0.0]), _t([1.0, 2.0]), torch.ones(2, 2, dtype=F64))
    sum(terms).backward()
    assert all(torch.isfinite(v) for v in terms) and torch.isfinite(s.grad).all()
    assert terms[0].item() == pytest.approx(0.25 * 100)  # BCE's log clamp: -ln 0 -> 100
    assert terms[2].item() == pytest.approx(2 * 100)


# ----------------------------------------------------------------------------- dw_loss on a batch
def _batch(seed, gts_per_image):
    """Points of a 64 x 64 image on 2 levels, per-image gts, random logits and distances."""
    g = torch.Generator().manual_seed(seed)
    cells, counts = PointGenerator((8, 16), offset=0.5)([torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)])
    r, n = len(cells), len(gts_per_image)
    preds = DensePredictions(
        torch.randn(n, r, 3, generator=g, dtype=F64, requires_grad=True),
        (4 + 30 * torch.rand(n, r, 4, generator=g, dtype=F64)).requires_grad_(),
        torch.randn(n, r, generator=g, dtype=F64, requires_grad=True),
    )
    targets = []
    for k in gts_per_image:
        xy = torch.rand(k, 2, generator=g, dtype=F64) * 30
        boxes = torch.cat([xy, xy + 8 + torch.rand(k, 2, generator=g, dtype=F64) * 30], 1)
        targets.append((boxes, torch.randint(1, 4, (k,), generator=g)))
    coder = LTRBCoder()
    detached = preds.detach()
    assignments = [
        dw_assign(
            cells.to(F64), counts, b, lab, coder.decode(detached.bbox_reg[i], cells.to(F64)),
            joint_scores(detached.image(i)),
        )
        for i, (b, lab) in enumerate(targets)
    ]
    return preds, assignments, cells.to(F64), targets


def test_batch_loss_matches_independent_formulas():
    preds, assignments, cells, targets = _batch(0, [3, 0, 2])
    losses = dw_loss(preds, assignments, cells, LTRBCoder())
    assert set(losses) == {"loss_cls_pos", "loss_loc", "loss_cls_neg"}
    s = torch.sigmoid(preds.cls_logits) * torch.sigmoid(preds.centerness)[..., None]
    centres = (cells[:, :2] + cells[:, 2:]) / 2
    cls_pos = loc = 0.0
    for i, (a, (boxes, labels)) in enumerate(zip(assignments, targets)):
        pred = torch.cat([centres - preds.bbox_reg[i, :, :2], centres + preds.bbox_reg[i, :, 2:]], 1)
        big_l = 1 - torchvision.ops.generalized_box_iou(pred, boxes)  # (R, G), independent GIoU
        w = a.pos_weights
        loc = loc + (w * big_l[a.pos_points, a.pos_gts]).sum()
        cls_pos = cls_pos - (w * torch.log(s[i, a.pos_points, labels[a.pos_gts] - 1])).sum()
    neg_prob = torch.stack([a.neg_prob for a in assignments])
    neg = (neg_prob * s**2 * -torch.log1p(-s)).sum()
    assert losses["loss_loc"].item() == pytest.approx(1.25 * loc.item() / 5, rel=1e-9)
    assert losses["loss_cls_pos"].item() == pytest.approx(0.25 * cls_pos.item() / 5, rel=1e-9)
    assert losses["loss_cls_neg"].item() == pytest.approx(neg.item() / max(1.0, (1 - neg_prob).sum().item()), rel=1e-9)


def test_batch_without_gts_keeps_every_prediction_in_the_graph():
    preds, assignments, cells, _ = _batch(1, [0, 0])
    losses = dw_loss(preds, assignments, cells, LTRBCoder())
    assert losses["loss_cls_pos"].item() == 0 and losses["loss_loc"].item() == 0 and losses["loss_cls_neg"] > 0
    sum(losses.values()).backward()
    assert all(t.grad is not None for t in preds)
    assert preds.bbox_reg.grad.abs().sum() == 0


# ----------------------------------------------------------------------------- §11.7 two processes
def test_normalisers_are_means_over_ranks(two_ranks):
    preds, assignments, cells, _ = _batch(2, [3])
    local = dw_loss(preds, assignments, cells, LTRBCoder())  # 1 process: N_pos = 3
    negsum = sum((1 - a.neg_prob).sum().item() for a in assignments)
    two_ranks(1.0, 0.5)  # the other rank has 1 gt and negsum 0.5
    both = dw_loss(preds, assignments, cells, LTRBCoder())
    assert both["loss_cls_pos"].item() == pytest.approx(local["loss_cls_pos"].item() * 3 / 2, rel=1e-12)
    assert both["loss_loc"].item() == pytest.approx(local["loss_loc"].item() * 3 / 2, rel=1e-12)
    raw_neg = local["loss_cls_neg"].item() * max(1.0, negsum)
    assert both["loss_cls_neg"].item() == pytest.approx(raw_neg / max(1.0, (negsum + 0.5) / 2), rel=1e-12)


def test_floors_apply_after_the_mean(two_ranks):
    preds, assignments, cells, _ = _batch(3, [0])
    raw = dw_loss(preds, assignments, cells, LTRBCoder())["loss_cls_neg"].item()  # negsum 0 -> N_neg 1
    two_ranks(0.0, 0.6)  # mean negsum (0 + 0.6) / 2 = 0.3 -> still 1
    assert dw_loss(preds, assignments, cells, LTRBCoder())["loss_cls_neg"].item() == pytest.approx(raw, rel=1e-12)


def test_two_ranks_averaged_equal_one_process_with_the_whole_batch(two_ranks):
    preds, assignments, cells, _ = _batch(4, [3, 1])
    whole = dw_loss(preds, assignments, cells, LTRBCoder())  # N_pos = 4
    halves = [DensePredictions(*(t[i:i + 1] for t in preds)) for i in range(2)]
    per_rank = []
    for i in range(2):
        other = assignments[1 - i]
        two_ranks(float(len(other.gt_labels)), (1 - other.neg_prob).sum().item())
        per_rank.append(dw_loss(halves[i], assignments[i:i + 1], cells, LTRBCoder()))
    for key in ("loss_cls_pos", "loss_loc"):
        averaged = (per_rank[0][key] + per_rank[1][key]) / 2  # what DDP's gradient mean amounts to
        assert averaged.item() == pytest.approx(whole[key].item(), rel=1e-12)


def test_zero_area_predicted_boxes_give_finite_losses_and_gradients():
    preds, assignments, cells, _ = _batch(5, [2, 1])
    zero = DensePredictions(preds.cls_logits, torch.zeros_like(preds.bbox_reg).requires_grad_(), preds.centerness)
    losses = dw_loss(zero, assignments, cells, LTRBCoder())
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_loc"] > 0
    # a point box inside its gt sits at a stationary point of GIoU (as in mmdet): zero, not NaN
    assert torch.isfinite(zero.bbox_reg.grad).all()
