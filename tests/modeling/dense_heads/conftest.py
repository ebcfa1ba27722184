"""Fixtures for head tests: heads built from shipped configs, small feature batches, targets."""
import os

import pytest
import torch

from atss_core.config import cfg as _cfg
from atss_core.modeling.dense_heads import build_dense_head
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# Padded 64 x 96 batch -> P3..P7 maps of these sizes (strides 8..128).
GRID_SIZES = ((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))
HEAD_CONFIGS = {
    "ATSS_ON": ("configs/atss/atss_R_50_FPN_1x.yaml", "ATSS"),
    "DYNAMIC_ATSS_ON": ("configs/dynamic_atss/dynamic_atss_R_50_FPN_1x.yaml", "ATSS"),
    "FCOS_ON": ("configs/fcos/fcos_R_50_FPN_1x.yaml", "FCOS"),
    "FCOS_ON imprv": ("configs/fcos/fcos_imprv_R_50_FPN_1x.yaml", "FCOS"),
    "RETINANET_ON": ("configs/retinanet/retinanet_R-50-FPN_1x.yaml", "RETINANET"),
    "DSLA_ON": ("configs/dsla/dsla_R_50_FPN_1x.yaml", "DSLA"),
    "DW_ON": ("configs/dw/dw_R_50_FPN_1x.yaml", "DW"),
    "DW_ON worefine": ("configs/dw/dw_R_50_FPN_worefine_1x.yaml", "DW"),
    "O2F_ON": ("configs/o2f/o2f_R_50_FPN_1x.yaml", "O2F"),
}


def config_from(path, node, **head_keys):
    """The config file ``path`` (from the repository root) on the CPU, with MODEL.<node>.<key> overrides."""
    c = _cfg.clone()
    c.merge_from_file(os.path.join(ROOT, path))
    c.MODEL.DEVICE = "cpu"
    for key, value in head_keys.items():
        c.MODEL[node][key] = value
    return c


def _config_of(name, **head_keys):
    return config_from(*HEAD_CONFIGS[name], **head_keys)


@pytest.fixture
def head_config():
    """``make(name, **head_keys)``: the shipped config of ``name`` (a HEAD_CONFIGS key) with
    MODEL.<head>.<key> overrides."""
    return _config_of


@pytest.fixture
def small_head():
    """``make(name, **head_keys)``: that head with 6 classes, 1 tower conv, 32 input channels."""

    def make(name, **head_keys):
        head_keys = {"NUM_CLASSES": 6, "NUM_CONVS": 1, **head_keys}
        torch.manual_seed(0)
        return build_dense_head(_config_of(name, **head_keys), 32)

    return make


@pytest.fixture
def feature_batch():
    """``make(num_images=2, seed=0)`` -> (ImageList of 64 x 96 and 54 x 76 images, 5 maps of 32 channels)."""

    def make(num_images=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        feats = [torch.randn(num_images, 32, h, w, generator=g) for h, w in GRID_SIZES]
        return ImageList(torch.zeros(num_images, 3, 64, 96), [(64, 96), (54, 76)][:num_images]), feats

    return make


@pytest.fixture
def boxes_target():
    """``make([[x1, y1, x2, y2], ...], [label, ...])`` -> an xyxy BoxList of a 96 x 64 image."""

    def make(boxes, labels):
        target = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (96, 64))
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        return target

    return make
