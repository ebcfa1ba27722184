"""FCOS locations and assignment: atss_heads §9.1, spec C6 and check C17."""
import pytest
import torch

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners import fcos_assign
from atss_core.modeling.assigners.fcos import centre_regions

LEVEL_START = [0, 1600, 2000, 2100, 2125]  # a 320 x 320 map: P3..P7 grids 40, 20, 10, 5, 3


def _cells():
    cells, per_level = PointGenerator()([torch.empty(1, 0, n, n) for n in (40, 20, 10, 5, 3)])
    assert per_level == [1600, 400, 100, 25, 9]
    return cells, per_level


def _row(level, x, y):
    """Row of the location (x, y) in pixels: locations sit at k s + s // 2."""
    s = 8 * 2**level
    kx, ky = (x - s // 2) // s, (y - s // 2) // s
    assert (kx * s + s // 2, ky * s + s // 2) == (x, y)
    return LEVEL_START[level] + ky * [40, 20, 10, 5, 3][level] + kx


def _assign(gts, labels, radius=0.0):
    cells, per_level = _cells()
    gts = torch.as_tensor(gts, dtype=torch.float32).reshape(-1, 4)
    return fcos_assign(cells, per_level, gts, torch.as_tensor(labels), center_sampling_radius=radius)


def test_locations_are_stride_cells_centred_on_k_s_plus_half():
    cells, _ = _cells()
    centre = (cells[:, :2] + cells[:, 2:]) / 2
    assert centre[0].tolist() == [4, 4] and centre[_row(1, 40, 24)].tolist() == [40, 24]
    assert centre[_row(4, 320, 192)].tolist() == [320, 192]
    assert (cells[:, 2] - cells[:, 0])[LEVEL_START].tolist() == [8, 16, 32, 64, 128]
    assert PointGenerator().state_dict() == {}
    with pytest.raises(ValueError, match="2 feature levels for 5 point strides"):
        PointGenerator()([torch.empty(1, 0, 2, 2)] * 2)


def test_c17_centre_region():
    region = centre_regions(torch.tensor([[0.0, 0.0, 300.0, 300.0]]), torch.tensor([32.0]), 1.5)
    assert region.tolist() == [[[102, 102, 198, 198]]]
    # Near a gt side the region is clipped to the gt.
    region = centre_regions(torch.tensor([[0.0, 0.0, 40.0, 300.0]]), torch.tensor([32.0]), 1.5)
    assert region.tolist() == [[[0, 102, 40, 198]]]


def test_c17_centre_sampling():
    gt = [[0.0, 0.0, 300.0, 300.0]]
    labels = _assign(gt, [3], radius=1.5).labels
    assert labels[_row(2, 112, 144)].item() == 3  # max(l,t,r,b) = 188 in [128, 256], inside [102, 198]
    assert labels[_row(2, 80, 144)].item() == 0  # inside the gt, in range (220), outside the region
    assert _assign(gt, [3], radius=0.0).labels[_row(2, 80, 144)].item() == 3


def test_level_ranges_are_inclusive_at_both_ends():
    # (4, 4) on P3: max(l,t,r,b) = 64, the top of [-1, 64].
    assert _assign([[0.0, 0.0, 68.0, 68.0]], [1]).labels[_row(0, 4, 4)].item() == 1
    # (8, 8) on P4: max = 64, the bottom of [64, 128]; (4, 4) on P3 has 68 > 64.
    out = _assign([[0.0, 0.0, 72.0, 72.0]], [1])
    assert out.labels[_row(1, 8, 8)].item() == 1 and out.labels[_row(0, 4, 4)].item() == 0
    assert out.labels[_row(0, 12, 12)].item() == 1  # max 60


def test_strictly_inside_and_smallest_area_wins():
    # (4, 4) lies on the left and top sides of the first gt: not inside (min > 0 is strict).
    out = _assign([[4.0, 4.0, 40.0, 40.0]], [2])
    assert out.labels[_row(0, 4, 4)].item() == 0 and out.labels[_row(0, 12, 12)].item() == 2
    # (20, 20) is inside both; the +1 areas are 41 x 41 and 31 x 31.
    out = _assign([[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 40.0, 40.0]], [1, 4])
    assert out.labels[_row(0, 20, 20)].item() == 4
    assert out.matched_boxes[_row(0, 20, 20)].tolist() == [10, 10, 40, 40]
    assert out.labels[_row(0, 4, 4)].item() == 1 and out.matched_idx[_row(0, 4, 4)].item() == 0


def test_one_gt_and_zero_gt():
    out = _assign([[20.0, 30.0, 50.0, 54.0]], [2])
    pos = out.labels.nonzero().flatten()
    # All of P3 (max side <= 64) inside the box: x in {28, 36, 44}, y in {36, 44, 52}.
    assert pos.tolist() == sorted(_row(0, x, y) for x in (28, 36, 44) for y in (36, 44, 52))
    assert (out.matched_idx[pos] == 0).all() and (out.matched_idx[out.labels == 0] == -1).all()
    empty = _assign(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert empty.labels.count_nonzero() == 0 and empty.matched_boxes.shape == (2134, 4)
