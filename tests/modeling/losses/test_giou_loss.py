"""GIoU loss: atss_heads §6 and check C10."""
import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from atss_core.modeling.losses import giou_loss


def test_c10_hand_values():
    loss = giou_loss(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]]))
    assert loss.item() == pytest.approx(1 - (25 / 175 - 50 / 225), abs=1e-6)  # 1.079365
    # The C4 anchor (zero deltas) against gt [4, 5, 22, 15]: I 150, U 255, E 270.
    loss = giou_loss(torch.tensor([[4.5, 4.5, 19.5, 19.5]]), torch.tensor([[4.0, 5, 22, 15]]))
    assert loss.item() == pytest.approx(0.467320, abs=1e-6)


def test_identical_and_disjoint():
    b = torch.tensor([[3.0, 4, 20, 30]])
    assert giou_loss(b, b).item() == pytest.approx(0.0, abs=1e-6)
    far = giou_loss(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[10.0, 10, 11, 11]]))
    assert 1.0 < far.item() < 2.0


def test_inverted_prediction_collapses_to_zero_size():
    # x2 < x1 becomes x2 = x1: zero area, no overlap, enclosing box still counts.
    inv = giou_loss(torch.tensor([[10.0, 0, 5, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    flat = giou_loss(torch.tensor([[10.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    assert inv.item() == pytest.approx(flat.item())


def test_matches_torchvision_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, 2, generator=g, dtype=torch.float64) * 50
    wh = 1 + torch.rand(200, 2, 2, generator=g, dtype=torch.float64) * 30
    pred, target = torch.cat([xy[:, 0], xy[:, 0] + wh[:, 0]], 1), torch.cat([xy[:, 1], xy[:, 1] + wh[:, 1]], 1)
    torch.testing.assert_close(giou_loss(pred, target), generalized_box_iou_loss(pred, target), atol=1e-6, rtol=0)


def test_gradient_matches_torchvision():
    pred = torch.tensor([[1.0, 2, 12, 15], [0, 0, 5, 5]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[3.0, 1, 10, 18], [2, 2, 9, 9]], dtype=torch.float64)
    giou_loss(pred, target).sum().backward()
    ours = pred.grad.clone()
    pred.grad = None
    generalized_box_iou_loss(pred, target, reduction="sum").backward()
    torch.testing.assert_close(ours, pred.grad, atol=1e-6, rtol=0)
