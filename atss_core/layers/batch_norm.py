"""Batch norm with frozen statistics for the ResNet bodies (spec C11)."""
import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel.

    The statistics never update (no momentum, no ``num_batches_tracked``).
    ``eps`` defaults to 0 as in maskrcnn-benchmark, so Caffe2 AffineChannel
    weights (mean 0, var 1) are reproduced exactly; torchvision's version
    adds 1e-5.

    Args:
        num_features: C.
        eps: added to ``running_var`` (``MODEL.RESNETS.BN_EPS``).
        trainable_affine: if True, ``weight``/``bias`` are Parameters (trained
            while the statistics stay frozen, as mmdet's ``norm_eval=True``
            BN); otherwise all four tensors are buffers. The state-dict keys
            are the same either way.

    Shapes: x [N, C, H, W] -> y [N, C, H, W], computed in x's dtype.
    """

    def __init__(self, num_features, eps=0.0, trainable_affine=False):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.trainable_affine = trainable_affine
        weight, bias = torch.ones(num_features), torch.zeros(num_features)
        if trainable_affine:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        # Divide by the square root rather than multiply by rsqrt: exact for
        # the powers of two the spec's hand-worked check uses.
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # nn.BatchNorm2d checkpoints carry a counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, trainable_affine={self.trainable_affine}"
