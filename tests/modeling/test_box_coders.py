"""ATSS box coder: atss_heads §4.1 and check C4."""
import math

import pytest
import torch

from atss_core.modeling.box_coders import BoxCoder

ANCHOR = torch.tensor([[4.5, 4.5, 19.5, 19.5]], dtype=torch.float64)  # w = h = 16, centre (12, 12)
GT = torch.tensor([[4.0, 5.0, 22.0, 15.0]], dtype=torch.float64)  # w = 19, h = 11, centre (13, 10)


def test_box_encode_c4():
    deltas = BoxCoder("BOX").encode(GT, ANCHOR)
    expected = [0.625, -1.25, 5 * math.log(19 / 16), 5 * math.log(11 / 16)]
    torch.testing.assert_close(deltas[0], torch.tensor(expected, dtype=torch.float64))
    assert deltas[0].tolist() == pytest.approx([0.625, -1.25, 0.859251, -1.873467], abs=1e-6)


def test_box_decode_round_trip_and_identity():
    coder = BoxCoder("BOX")
    torch.testing.assert_close(coder.decode(coder.encode(GT, ANCHOR), ANCHOR), GT)
    torch.testing.assert_close(coder.decode(torch.zeros(1, 4, dtype=torch.float64), ANCHOR), ANCHOR)


def test_box_decode_clamps_log_size():
    box = BoxCoder("BOX").decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]], dtype=torch.float64), ANCHOR)[0]
    assert (box[2] - box[0] + 1).item() == pytest.approx(1000.0, rel=1e-9)
    assert (box[3] - box[1] + 1).item() == pytest.approx(16.0)
    # No lower clamp: a very negative dw shrinks the width towards 0 (+1 convention -> x2 - x1 -> -1).
    box = BoxCoder("BOX").decode(torch.tensor([[0.0, 0.0, -100.0, 0.0]], dtype=torch.float64), ANCHOR)[0]
    assert (box[2] - box[0]).item() == pytest.approx(-1.0, abs=1e-6)


def test_point_encode_decode():
    coder = BoxCoder("POINT", point_scale=8.0)
    # l = 8 (12 - 4) / 16, t = 8 (12 - 5) / 16, r = 8 (22 - 12) / 16, b = 8 (15 - 12) / 16
    torch.testing.assert_close(coder.encode(GT, ANCHOR)[0], torch.tensor([4.0, 3.5, 5.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(coder.decode(coder.encode(GT, ANCHOR), ANCHOR), GT)
    # POINT has no clamp: large distances decode linearly.
    big = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 0.0]], dtype=torch.float64), ANCHOR)[0]
    assert big[2].item() == pytest.approx(12 + 1000 * 16 / 8)


@pytest.mark.parametrize("mode", ["BOX", "POINT"])
def test_round_trip_random_and_batched(mode):
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 60], dim=1)
    gts = anchors + (torch.rand(50, 4, generator=g, dtype=torch.float64) - 0.5) * 4
    coder = BoxCoder(mode)
    torch.testing.assert_close(coder.decode(coder.encode(gts, anchors), anchors), gts)
    # Leading batch dims broadcast against (R, 4) anchors.
    deltas = torch.randn(3, 50, 4, generator=g, dtype=torch.float64)
    batched = coder.decode(deltas, anchors)
    assert batched.shape == (3, 50, 4)
    torch.testing.assert_close(batched[1], coder.decode(deltas[1], anchors))


def test_decode_follows_delta_dtype():
    out = BoxCoder("BOX").decode(torch.zeros(1, 4, dtype=torch.float32), ANCHOR)
    assert out.dtype == torch.float32


def test_unknown_mode():
    with pytest.raises(ValueError, match="REGRESSION_TYPE"):
        BoxCoder("LTRB")
