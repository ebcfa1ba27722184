"""Flattening of head outputs: atss_heads §2.4 and check C2."""
import torch

from atss_core.modeling.utils import flatten_head_outputs, permute_and_flatten


def _coded(n, a, k, h, w):
    """A (N, A*K, H, W) map whose value encodes (n, y, x, channel)."""
    t = torch.zeros(n, a * k, h, w)
    for i in range(n):
        for ch in range(a * k):
            for y in range(h):
                for x in range(w):
                    t[i, ch, y, x] = i * 1e6 + y * 1e4 + x * 1e3 + ch
    return t


def test_shapes_and_row_index_a1():
    logits = [_coded(2, 1, 80, 4, 4), _coded(2, 1, 80, 2, 2) + 0.5]
    reg = [torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 2, 2)]
    ctr = [_coded(2, 1, 1, 4, 4), _coded(2, 1, 1, 2, 2) + 0.5]
    p = flatten_head_outputs(logits, reg, ctr, num_anchors=1)
    assert p.cls_logits.shape == (2, 20, 80) and p.bbox_reg.shape == (2, 20, 4) and p.centerness.shape == (2, 20)
    assert p.cls_logits.reshape(-1, 80).shape == (40, 80) and p.centerness.reshape(-1).shape == (40,)
    # (image 1, level 1, y=1, x=0) is flat row 20 + 16 + 1*2 + 0 = 38
    row = p.cls_logits.reshape(-1, 80)[38]
    assert row[7].item() == 1e6 + 1e4 + 7 + 0.5
    assert p.centerness.reshape(-1)[38].item() == 1e6 + 1e4 + 0.5


def test_anchor_major_channels_a3():
    logits = [_coded(2, 3, 80, 4, 4), _coded(2, 3, 80, 2, 2)]
    reg = [torch.zeros(2, 12, 4, 4), torch.zeros(2, 12, 2, 2)]
    p = flatten_head_outputs(logits, reg, [], num_anchors=3)
    assert p.centerness is None
    flat = p.cls_logits.reshape(-1, 80)
    assert flat.shape == (120, 80)
    # (n=0, level 0, y=0, x=1, a=2): row (0*4 + 1)*3 + 2 = 5, class c from raw channel 2*80 + c
    for c in (0, 13, 79):
        assert flat[5, c].item() == 1e3 + 2 * 80 + c


def test_permute_and_flatten_rejects_bad_channel_count():
    import pytest

    with pytest.raises(ValueError, match="multiple of 3"):
        permute_and_flatten(torch.zeros(1, 8, 2, 2), 3)
