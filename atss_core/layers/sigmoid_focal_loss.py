"""Sigmoid focal loss with the ATSS label encoding (kernels.md §2).

For logits x [R, C] and targets t [R], element (r, d) is

- positive iff t[r] == d + 1: ``alpha * (1 - p)^gamma * -log(p)``,
- negative iff t[r] >= 0 and t[r] != d + 1: ``(1 - alpha) * p^gamma * -log(1 - p)``,
- ignored (zero loss and gradient) iff t[r] < 0,

with p = sigmoid(x). So 0 is background (all channels negative), -1 is
ignore, and a label above C has no positive channel. The logs are written
as softplus terms and the gradient is the closed form of §2.3, which keeps
both finite for any logit (the original CPU fallback gave NaN/inf).

The compiled kernel (``torch.ops.atss_core.sigmoid_focal_loss``, CPU and CUDA)
computes the loss and, when logits require grad, its derivative in one pass;
the backward is then one multiply. Without a kernel for the device the
pure-PyTorch :func:`sigmoid_focal_loss_reference` runs instead.
"""
import torch
from torch import nn

from ._ops import compiled_op

_REDUCTIONS = ("none", "sum")


def sigmoid_focal_loss(logits, targets, gamma, alpha, reduction="none"):
    """Focal loss per element or summed.

    Args:
        logits (Tensor[R, C]): float logits; float16/bfloat16 are computed in float32.
        targets (Tensor[R]): int32/int64 labels, 1..C class, 0 background, < 0 ignore.
        gamma (float): focusing exponent (>= 0).
        alpha (float): weight of positive elements; negatives get 1 - alpha.
        reduction (str): "none" or "sum".

    Returns:
        Tensor[R, C] (or a scalar for "sum"): float32 (float64 for float64 logits).
    """
    _check_inputs(logits, targets, reduction)
    op = compiled_op("sigmoid_focal_loss", logits.device)
    if op is None:
        return sigmoid_focal_loss_reference(logits, targets, gamma, alpha, reduction)
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _ = op(logits, targets, float(gamma), float(alpha), reduction, with_grad)
    return loss


def sigmoid_focal_loss_reference(logits, targets, gamma, alpha, reduction="none"):
    """Pure-PyTorch :func:`sigmoid_focal_loss` (any device; also twice differentiable)."""
    _check_inputs(logits, targets, reduction)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    loss = _SigmoidFocalLossFunction.apply(logits, targets, float(gamma), float(alpha))
    return loss.sum() if reduction == "sum" else loss


class SigmoidFocalLoss(nn.Module):
    """``forward(logits [R, C], targets [R]) -> scalar``: the summed
    :func:`sigmoid_focal_loss` (normalising is the caller's job, as in ATSS)."""

    def __init__(self, gamma, alpha):
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def forward(self, logits, targets):
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha, reduction="sum")

    def extra_repr(self):
        return f"gamma={self.gamma}, alpha={self.alpha}"


def _check_inputs(logits, targets, reduction):
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            f"sigmoid_focal_loss: logits must be a floating [R, C] tensor, got {logits.dtype} {tuple(logits.shape)}"
        )
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"sigmoid_focal_loss: targets must have shape [R] with R = {logits.shape[0]}, got {tuple(targets.shape)}"
        )
    if targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"sigmoid_focal_loss: targets must be integer labels (int32/int64), got {targets.dtype}")
    if targets.device != logits.device:
        raise ValueError(f"sigmoid_focal_loss: logits are on {logits.device} but targets on {targets.device}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"sigmoid_focal_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class _SigmoidFocalLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(logits, targets, gamma, alpha):
        return _forward(logits, targets, gamma, alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, targets, gamma, alpha = inputs
        ctx.save_for_backward(logits, targets)
        ctx.gamma, ctx.alpha = gamma, alpha

    @staticmethod
    def backward(ctx, grad_losses):
        logits, targets = ctx.saved_tensors
        grad_logits = _backward(logits, targets, grad_losses, ctx.gamma, ctx.alpha)
        return grad_logits, None, None, None


def _element_kinds(targets, num_classes):
    """(positive, negative) bool masks [R, C]; ignored elements are in neither."""
    t = targets[:, None]
    classes = torch.arange(1, num_classes + 1, dtype=targets.dtype, device=targets.device)
    positive = t == classes
    negative = (t >= 0) & ~positive
    return positive, negative


def _softplus_both(x):
    """(softplus(x), softplus(-x)) = (-log(1 - p), -log p), exact for any x."""
    tail = torch.log1p(torch.exp(-x.abs()))
    return torch.relu(x) + tail, torch.relu(-x) + tail


def _forward(x, targets, gamma, alpha):
    positive, negative = _element_kinds(targets, x.shape[1])
    p, q = torch.sigmoid(x), torch.sigmoid(-x)  # q = 1 - p without cancellation
    neg_log_q, neg_log_p = _softplus_both(x)
    loss_pos = alpha * q.pow(gamma) * neg_log_p
    loss_neg = (1 - alpha) * p.pow(gamma) * neg_log_q
    zero = x.new_zeros(())
    return torch.where(positive, loss_pos, torch.where(negative, loss_neg, zero))


def _backward(x, targets, grad_losses, gamma, alpha):
    # kernels.md §2.3, with log p = -softplus(-x) and log(1 - p) = -softplus(x):
    #   dL+/dx = -alpha (1-p)^gamma [(1-p) + gamma p softplus(-x)]
    #   dL-/dx = (1-alpha) p^gamma [p + gamma (1-p) softplus(x)]
    # Every factor is finite, unlike autograd through pow near p = 0 or 1.
    positive, negative = _element_kinds(targets, x.shape[1])
    p, q = torch.sigmoid(x), torch.sigmoid(-x)
    neg_log_q, neg_log_p = _softplus_both(x)
    grad_pos = -alpha * q.pow(gamma) * (q + gamma * p * neg_log_p)
    grad_neg = (1 - alpha) * p.pow(gamma) * (p + gamma * q * neg_log_q)
    zero = x.new_zeros(())
    return torch.where(positive, grad_pos, torch.where(negative, grad_neg, zero)) * grad_losses
