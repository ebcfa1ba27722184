"""Quality focal loss (Li et al., Generalized Focal Loss, 2020): sigmoid BCE against a soft
target in [0, 1], modulated by |target - p|^beta. Shared by the Dynamic ATSS and DSLA heads."""
import torch
import torch.nn.functional as F
from torch import Tensor


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, gamma: float = 2.0) -> Tensor:
    """Per-element loss, p = sigmoid(logits), no alpha:

    - channel ``label - 1`` of rows with label >= 1: |y - p|^gamma * BCE(logit, y),
      y = the row's score;
    - every other channel of rows with label >= 0: p^gamma * BCE(logit, 0);
    - rows with label -1 (ignored): 0.

    logits (M, C), labels (M,) int in -1..C (0 = background), scores (M,) in
    [0, 1] -> (M, C). The modulating factor is not detached: gradient flows
    through it, as in mmdet's ``quality_focal_loss`` (dsla §3.1).
    """
    classes = torch.arange(1, logits.shape[1] + 1, device=labels.device)
    target_channel = labels[:, None] == classes
    counted = (labels >= 0)[:, None]
    p = logits.sigmoid()
    y = torch.where(target_channel, scores[:, None].to(logits.dtype), torch.zeros_like(logits))
    loss = (y - p).abs().pow(gamma) * F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.where(counted, loss, torch.zeros_like(loss))
