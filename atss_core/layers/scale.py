"""Learnable scalar multiplier (one per FPN level in the ATSS/FCOS heads)."""
import torch
from torch import nn


class Scale(nn.Module):
    """``y = x * scale`` with a learnable ``scale`` of shape [1] (key ``<name>.scale``)."""

    def __init__(self, init_value=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x):
        return x * self.scale
