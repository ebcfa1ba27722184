"""FCOS losses: the IoU losses on (l, t, r, b) and the ATSS flow with them (atss_heads §9.1)."""
import functools
import math

import pytest
import torch

from atss_core.layers import SigmoidFocalLoss
from atss_core.modeling.assigners.atss import AnchorAssignment
from atss_core.modeling.box_coders import LTRBCoder
from atss_core.modeling.losses import atss_loss, fcos_box_loss, ltrb_iou_loss
from atss_core.modeling.utils import DensePredictions

# A point at the origin: pred (l, t, r, b) = (1, 2, 3, 4) is the box [-1, -2, 3, 4] (area 24),
# target (2, 1, 1, 3) is [-2, -1, 1, 3] (area 12); overlap [-1, -1, 1, 3] = 8, union 28,
# enclosing [-2, -2, 3, 4] = 30. The +1 smoothing: IoU = 9 / 29.
PRED, TARGET = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 1.0, 3.0]
IOU = 9 / 29


@pytest.mark.parametrize(
    "loss_type, expected",
    [("iou", -math.log(IOU)), ("linear_iou", 1 - IOU), ("giou", 1 - (IOU - (30 + 1e-7 - 28) / (30 + 1e-7)))],
)
def test_iou_loss_types(loss_type, expected):
    loss = ltrb_iou_loss(torch.tensor([PRED], dtype=torch.float64), torch.tensor([TARGET], dtype=torch.float64), loss_type)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_plus_one_smoothing_is_not_scale_invariant():
    pred, target = torch.tensor([PRED]), torch.tensor([TARGET])
    # In pixels x 8 the overlap is 512 of a union of 1792: IoU (513 / 1793) differs from 9 / 29.
    assert ltrb_iou_loss(pred * 8, target * 8, "linear_iou").item() == pytest.approx(1 - 513 / 1793, abs=1e-6)
    assert ltrb_iou_loss(target, target, "iou").item() == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="IOU_LOSS_TYPE"):
        ltrb_iou_loss(pred, target, "diou")


def test_fcos_loss_on_one_location():
    # Location (12, 12) of P3 (cell [8, 8, 16, 16]) inside gt [4, 5, 22, 15]: targets
    # (8, 7, 10, 3) px = (1, 0.875, 1.25, 0.375) strides; centerness target 0.585540 (C9).
    cells = torch.tensor([[8.0, 8.0, 16.0, 16.0], [200.0, 200.0, 208.0, 208.0]])
    gt = torch.tensor([[4.0, 5.0, 22.0, 15.0]])
    assignment = AnchorAssignment(torch.tensor([3, 0]), torch.tensor([0, -1]), torch.cat([gt, torch.zeros(1, 4)]))
    coder = LTRBCoder(in_strides=True)
    assert coder.encode(gt, cells[:1]).tolist() == [[1.0, 0.875, 1.25, 0.375]]
    pred = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]])
    preds = DensePredictions(torch.full((1, 2, 3), -math.log(99)), pred, torch.zeros(1, 2))
    losses = atss_loss(
        preds, [assignment], cells, coder, SigmoidFocalLoss(2.0, 0.25), reg_loss_weight=1.0,
        box_loss=functools.partial(fcos_box_loss, loss_type="giou"),
    )
    # Strides: pred box [-1, -1, 1, 1] (4), target [-1, -0.875, 1.25, 0.375] (2.8125), overlap
    # 2 x 1.25 = 2.5, union 4.3125, enclosing 2.25 x 2 = 4.5; the single weight cancels.
    iou = 3.5 / 5.3125
    assert losses["loss_reg"].item() == pytest.approx(1 - (iou - (4.5 - 4.3125) / 4.5), abs=1e-6)
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert losses["loss_cls"].item() == pytest.approx(1.128382 + 5 * 7.53775e-7, abs=1e-5)
