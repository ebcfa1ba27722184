"""GroupNorm and conv-block factories for the backbone and FPN.

Everything takes explicit arguments; the builders pass the
``MODEL.GROUP_NORM.*`` values through (see :func:`group_norm_kwargs`).
"""
from torch import nn

from atss_core.layers import Conv2d


def group_norm_kwargs(cfg):
    """The ``MODEL.GROUP_NORM`` values as keyword arguments of :func:`group_norm`."""
    gn = cfg.MODEL.GROUP_NORM
    return dict(dim_per_gp=gn.DIM_PER_GP, num_groups=gn.NUM_GROUPS, eps=gn.EPSILON)


def get_group_gn(dim, dim_per_gp=-1, num_groups=32):
    """Number of groups for ``dim`` channels: ``dim // dim_per_gp`` if that is set, else ``num_groups``.

    Exactly one of ``dim_per_gp`` / ``num_groups`` must be -1
    (``MODEL.GROUP_NORM.DIM_PER_GP`` / ``NUM_GROUPS``).
    """
    if (dim_per_gp == -1) == (num_groups == -1):
        raise ValueError(
            "exactly one of MODEL.GROUP_NORM.DIM_PER_GP and MODEL.GROUP_NORM.NUM_GROUPS must be -1, "
            f"got DIM_PER_GP={dim_per_gp}, NUM_GROUPS={num_groups}"
        )
    if dim_per_gp > 0:
        if dim % dim_per_gp:
            raise ValueError(f"{dim} channels are not divisible by MODEL.GROUP_NORM.DIM_PER_GP={dim_per_gp}")
        return dim // dim_per_gp
    if dim % num_groups:
        raise ValueError(f"{dim} channels are not divisible by MODEL.GROUP_NORM.NUM_GROUPS={num_groups}")
    return num_groups


def group_norm(out_channels, dim_per_gp=-1, num_groups=32, eps=1e-5, affine=True):
    """``nn.GroupNorm`` over ``out_channels`` with the group count of :func:`get_group_gn`."""
    return nn.GroupNorm(get_group_gn(out_channels, dim_per_gp, num_groups), out_channels, eps=eps, affine=affine)


def conv_with_kaiming_uniform(use_gn=False, use_relu=False, gn_kwargs=None):
    """Return ``make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1)``.

    The conv is "same"-padded, kaiming_uniform(a=1) (bound sqrt(3 / fan_in)),
    bias 0, and has no bias when followed by GN. Without GN/ReLU the bare conv
    is returned (keys ``<name>.weight``); otherwise a Sequential
    (``<name>.0`` conv, ``<name>.1`` GN), as maskrcnn-benchmark.

    Args:
        gn_kwargs: keyword arguments of :func:`group_norm` (defaults if None).
    """
    gn_kwargs = gn_kwargs or {}

    def make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1):
        conv = Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation, bias=not use_gn,
        )
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        if not (use_gn or use_relu):
            return conv
        layers = [conv]
        if use_gn:
            layers.append(group_norm(out_channels, **gn_kwargs))
        if use_relu:
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    return make_conv
