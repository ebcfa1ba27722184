"""RetinaNet losses and assignment: atss_heads §9.2 (normalisers, smooth-L1 beta, ignore, G = 0)."""
import math

import pytest
import torch

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.assigners import max_iou_assign
from atss_core.modeling.box_coders import BoxCoder
from atss_core.modeling.losses import retinanet_loss
from atss_core.modeling.utils import DensePredictions

PRIOR_LOGIT = -math.log(99)
FOCAL_POS = 1.128382  # 0.25 * 0.99^2 * ln 100 (C11)
FOCAL_NEG = 7.53775e-7  # 0.75 * 0.01^2 * -ln 0.99
# Three 16 x 16 anchors (+1 widths) side by side.
ANCHORS = torch.tensor([[0.0, 0.0, 15.0, 15.0], [16.0, 0.0, 31.0, 15.0], [40.0, 0.0, 55.0, 15.0]])


def _loss(assignments, num_classes=2):
    n = len(assignments)
    preds = DensePredictions(
        torch.full((n, 3, num_classes), PRIOR_LOGIT, requires_grad=True), torch.zeros(n, 3, 4, requires_grad=True), None
    )
    losses = retinanet_loss(preds, assignments, ANCHORS, BoxCoder("BOX"), SigmoidFocalLoss(2.0, 0.25))
    return losses, preds


def test_assignment_ignores_between_thresholds_and_rescues():
    # gt0 = anchor 0 shifted 2 px right: +1 IoU 14 x 16 / (2 x 256 - 224) = 0.778 -> positive.
    # gt1 (28 px wide) overlaps anchors 1 and 2: best IoU 192 / 512 = 0.375 < 0.4 with anchor 1,
    # which is rescued as gt1's best anchor.
    gts = torch.tensor([[2.0, 0.0, 17.0, 15.0], [20.0, 0.0, 47.0, 15.0]])
    out = max_iou_assign(ANCHORS, [3], gts, torch.tensor([1, 2]))
    assert out.labels.tolist() == [1, 2, 0] and out.matched_idx.tolist() == [0, 1, -1]
    out = max_iou_assign(ANCHORS, [3], gts[:1], torch.tensor([1]), fg_iou_thresh=0.8, bg_iou_thresh=0.1)
    # Anchor 0 (0.778) is in [0.1, 0.8) but rescued as gt0's best; anchor 1 (2/30 < 0.1) is background.
    assert out.labels.tolist() == [1, 0, 0]
    out = max_iou_assign(ANCHORS, [3], gts[1:], torch.tensor([2]), fg_iou_thresh=0.5, bg_iou_thresh=0.2)
    # Anchor 2 overlaps gt1 by 8 px: 8 x 16 / (28 x 16 + 256 - 128) = 0.222 -> ignored (-1).
    assert out.labels.tolist() == [0, 2, -1] and out.matched_idx.tolist() == [-1, 0, -1]


def test_normalisers_and_smooth_l1():
    # Anchor 0 positive for gt [2, 0, 17, 15]: target deltas (10 * 2 / 16, 0, 0, 0) = (1.25, 0, 0, 0);
    # anchor 1 ignored, anchor 2 background.
    gts = torch.tensor([[2.0, 0.0, 17.0, 15.0]])
    out = max_iou_assign(ANCHORS, [3], gts, torch.tensor([2]), fg_iou_thresh=0.5, bg_iou_thresh=0.0)
    assert out.labels.tolist() == [2, -1, -1]
    out = out._replace(labels=torch.tensor([2, -1, 0]))
    losses, _ = _loss([out])
    assert set(losses) == {"loss_retina_cls", "loss_retina_reg"}
    # Smooth L1 with beta 0.11 at |x| = 1.25: 1.25 - 0.055; divided by max(1, 4 x 1 positive).
    assert losses["loss_retina_reg"].item() == pytest.approx((1.25 - 0.055) / 4, abs=1e-6)
    # Positive element + 1 + 2 negatives (the ignored row counts 0), / (1 positive + 1 image).
    assert losses["loss_retina_cls"].item() == pytest.approx((FOCAL_POS + 3 * FOCAL_NEG) / 2, abs=1e-6)
    # Below beta the quadratic branch: 0.5 x^2 / beta.
    near = max_iou_assign(ANCHORS, [3], torch.tensor([[0.1, 0.0, 15.1, 15.0]]), torch.tensor([1]))
    assert _loss([near])[0]["loss_retina_reg"].item() == pytest.approx(0.5 * (10 * 0.1 / 16) ** 2 / 0.11 / 4, rel=1e-4)


def test_zero_gt_images():
    empty = max_iou_assign(ANCHORS, [3], torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert empty.labels.tolist() == [0, 0, 0]
    losses, preds = _loss([empty, empty])
    # No positive: the focal sum over 2 images x 3 rows x 2 classes is divided by the 2 images.
    assert losses["loss_retina_cls"].item() == pytest.approx(12 * FOCAL_NEG / 2, rel=1e-4)
    assert losses["loss_retina_reg"].item() == 0
    sum(losses.values()).backward()
    assert preds.bbox_reg.grad is not None and torch.isfinite(preds.cls_logits.grad).all()


def test_no_cross_rank_reduction(two_ranks):
    fake = two_ranks()
    out = max_iou_assign(ANCHORS, [3], torch.tensor([[2.0, 0.0, 17.0, 15.0]]), torch.tensor([1]))
    losses, _ = _loss([out])
    assert fake.calls == 0  # normalised by this rank's own counts
    assert losses["loss_retina_reg"].item() == pytest.approx((1.25 - 0.055) / 4, abs=1e-6)
