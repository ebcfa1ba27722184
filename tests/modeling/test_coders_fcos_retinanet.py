"""FCOS's (l, t, r, b) coder, and RetinaNet's coder = ATSS BOX (atss_heads §4.2, §9.1, C9)."""
import math

import pytest
import torch

from atss_core.modeling.box_coders import BoxCoder, LTRBCoder
from atss_core.modeling.losses import centerness_targets

CELL = torch.tensor([[8.0, 8.0, 16.0, 16.0]])  # location (12, 12) of P3
GT = torch.tensor([[4.0, 5.0, 22.0, 15.0]])


def test_ltrb_in_pixels_and_in_strides():
    assert LTRBCoder().encode(GT, CELL).tolist() == [[8, 7, 10, 3]]
    assert LTRBCoder(in_strides=True).encode(GT, CELL).tolist() == [[1, 0.875, 1.25, 0.375]]
    for coder in (LTRBCoder(), LTRBCoder(in_strides=True)):
        assert torch.equal(coder.decode(coder.encode(GT, CELL), CELL), GT)
    # (1, 1, 1, 1) is one pixel in pixels, one stride in strides; no clamp.
    assert LTRBCoder(in_strides=True).decode(torch.ones(1, 4), CELL).tolist() == [[4, 4, 20, 20]]
    assert LTRBCoder().decode(torch.tensor([[1.0, 1.0, 1e4, 1.0]]), CELL).tolist() == [[11, 11, 10012, 13]]


def test_c9_fcos_centerness_target():
    assert centerness_targets(CELL, GT).item() == pytest.approx(math.sqrt(8 / 10 * 3 / 7), abs=1e-6)


def _standard_encode(gt, anchor, weights=(10, 10, 5, 5)):
    """maskrcnn-benchmark BoxCoder.encode written out: centre x1 + 0.5 w with w = x2 - x1 + 1."""
    aw, ah = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    gw, gh = gt[2] - gt[0] + 1, gt[3] - gt[1] + 1
    acx, acy, gcx, gcy = anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah, gt[0] + 0.5 * gw, gt[1] + 0.5 * gh
    wx, wy, ww, wh = weights
    return [wx * (gcx - acx) / aw, wy * (gcy - acy) / ah, ww * math.log(gw / aw), wh * math.log(gh / ah)]


def _standard_decode(d, anchor):
    aw, ah = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    cx = d[0] / 10 * aw + anchor[0] + 0.5 * aw
    cy = d[1] / 10 * ah + anchor[1] + 0.5 * ah
    w, h = math.exp(min(d[2] / 5, math.log(1000 / 16))) * aw, math.exp(min(d[3] / 5, math.log(1000 / 16))) * ah
    return [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1]


def test_retinanet_standard_coder_is_the_atss_box_coder():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    anchors = torch.cat([anchors, anchors + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 60], dim=1)
    gts = anchors + torch.randn(50, 4, generator=g, dtype=torch.float64) * 4
    deltas = torch.randn(50, 4, generator=g, dtype=torch.float64) * 3
    coder = BoxCoder("BOX")
    expected_enc = [_standard_encode(t.tolist(), a.tolist()) for t, a in zip(gts, anchors)]
    expected_dec = [_standard_decode(d.tolist(), a.tolist()) for d, a in zip(deltas, anchors)]
    assert torch.allclose(coder.encode(gts, anchors), torch.tensor(expected_enc, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(coder.decode(deltas, anchors), torch.tensor(expected_dec, dtype=torch.float64), atol=1e-9)
