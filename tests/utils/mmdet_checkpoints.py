"""Shared by the mmdet conversion tests: synthetic mmdet ResNet/FPN state dicts with the key
names and shapes of checkpoints.md §1.3-1.4, an independent reference forward of mmcv's
ConvModule towers, the config of a conversion's overrides, and the convert tool as a module."""
import importlib.util
import math
import os

import torch
import torch.nn.functional as F
import torchvision

from atss_core.config import cfg as _cfg
from atss_core.utils.mmdet_convert import as_opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "convert_checkpoint.py")


def config_of(overrides):
    """Our default config with a conversion's overrides, on the CPU."""
    cfg = _cfg.clone()
    cfg.merge_from_list(as_opts(overrides))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def load_tool():
    """tools/convert_checkpoint.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("convert_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def _bn(sd, prefix, c, g):
    sd[f"{prefix}.weight"] = 0.2 + 1.3 * torch.rand(c, generator=g)
    sd[f"{prefix}.bias"] = 0.6 * torch.rand(c, generator=g) - 0.3
    sd[f"{prefix}.running_mean"] = torch.rand(c, generator=g) - 0.5
    sd[f"{prefix}.running_var"] = 0.5 + 1.5 * torch.rand(c, generator=g)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1234, dtype=torch.int64)


def conv(g, cout, cin, k):
    return rand(g, cout, cin, k, k, scale=math.sqrt(1.0 / (cin * k * k)))


def mmdet_resnet(g, depth=50, dcn_rows=0):
    """checkpoints.md §1.3: keys without the ``backbone.`` prefix; DCN in layer2-4 if dcn_rows."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    sd = {"conv1.weight": conv(g, 64, 3, 7)}
    _bn(sd, "bn1", 64, g)
    cin = 64
    for i, n in enumerate(blocks, start=1):
        width, cout = 64 * 2 ** (i - 1), 256 * 2 ** (i - 1)
        for j in range(n):
            p, inp = f"layer{i}.{j}", cin if j == 0 else cout
            sd[f"{p}.conv1.weight"] = conv(g, width, inp, 1)
            _bn(sd, f"{p}.bn1", width, g)
            sd[f"{p}.conv2.weight"] = conv(g, width, width, 3)
            if dcn_rows and i > 1:
                sd[f"{p}.conv2.conv_offset.weight"] = conv(g, dcn_rows, width, 3)
                sd[f"{p}.conv2.conv_offset.bias"] = rand(g, dcn_rows)
            _bn(sd, f"{p}.bn2", width, g)
            sd[f"{p}.conv3.weight"] = conv(g, cout, width, 1)
            _bn(sd, f"{p}.bn3", cout, g)
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = conv(g, cout, inp, 1)
                _bn(sd, f"{p}.downsample.1", cout, g)
        cin = cout
    return sd


def mmdet_fpn(g, p6_in=256):
    """checkpoints.md §1.4 (16 keys)."""
    sd = {}
    for m, cin in enumerate((512, 1024, 2048)):
        sd[f"lateral_convs.{m}.conv.weight"] = conv(g, 256, cin, 1)
        sd[f"lateral_convs.{m}.conv.bias"] = rand(g, 256, scale=0.1)
    for m in range(5):
        sd[f"fpn_convs.{m}.conv.weight"] = conv(g, 256, p6_in if m == 3 else 256, 3)
        sd[f"fpn_convs.{m}.conv.bias"] = rand(g, 256, scale=0.1)
    return sd


def ref_tower(x, sd, tower, dcn=False, num=4):
    """mmcv ConvModule stack [conv -> GN(32) -> ReLU] x num; the last conv a DCNv2 when ``dcn``."""
    for n in range(num):
        w, b = sd[f"{tower}.{n}.conv.weight"], sd.get(f"{tower}.{n}.conv.bias")
        if dcn and n == num - 1:
            o = F.conv2d(x, sd[f"{tower}.{n}.conv.conv_offset.weight"], sd[f"{tower}.{n}.conv.conv_offset.bias"], padding=1)
            # mmcv DCNv2: chunks 1, 2 of the 27 channels are the offsets, sigmoid(chunk 3) the mask.
            x = torchvision.ops.deform_conv2d(x, o[:, :18], w, b, padding=1, mask=o[:, 18:].sigmoid())
        else:
            x = F.conv2d(x, w, b, padding=1)
        x = F.relu(F.group_norm(x, 32, sd[f"{tower}.{n}.gn.weight"], sd[f"{tower}.{n}.gn.bias"]))
    return x
