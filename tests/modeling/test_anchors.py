"""Anchor geometry: framework §3.4/§3.5/§12 and atss_heads §3, check C3."""
import pytest
import torch

from atss_core.config import cfg as _cfg
from atss_core.modeling.anchors import AnchorGenerator, generate_cell_anchors, make_anchor_generator_atss, octave_sizes


def _maps(*hw):
    # Only the spatial size of a feature map matters to the generator.
    return [torch.empty(1, 0, h, w) for h, w in hw]


@pytest.fixture
def atss_gen():
    return make_anchor_generator_atss(_cfg.clone())


def test_atss_cell_anchors_per_level(atss_gen):
    expected = [
        [-27.5, -27.5, 35.5, 35.5],
        [-55.5, -55.5, 71.5, 71.5],
        [-111.5, -111.5, 143.5, 143.5],
        [-223.5, -223.5, 287.5, 287.5],
        [-447.5, -447.5, 575.5, 575.5],
    ]
    for level, cell in enumerate(atss_gen.cell_anchors):
        assert cell.dtype == torch.float32 and cell.shape == (1, 4)
        assert cell.tolist() == [expected[level]]


def test_state_dict_keys_are_the_checkpoint_names(atss_gen):
    sd = atss_gen.state_dict()
    assert list(sd) == [f"cell_anchors.{i}" for i in range(5)]
    assert all(v.shape == (1, 4) for v in sd.values())
    assert not list(atss_gen.parameters())


def test_anchor_count_800x1088(atss_gen):
    anchors, per_level = atss_gen(_maps((100, 136), (50, 68), (25, 34), (13, 17), (7, 9)))
    assert per_level == [13600, 3400, 850, 221, 63]
    assert anchors.shape == (18134, 4)


def test_grid_order_is_y_then_x(atss_gen):
    anchors, _ = atss_gen(_maps((100, 136), (50, 68), (25, 34), (13, 17), (7, 9)))
    # framework §12: P3 cell (row 2, col 3), centre (28, 20)
    assert anchors[2 * 136 + 3].tolist() == [-3.5, -11.5, 59.5, 51.5]
    # atss_heads C3: P3 (y=1, x=2), centre (20, 12)
    assert anchors[1 * 136 + 2].tolist() == [-11.5, -19.5, 51.5, 43.5]
    # First P4 anchor follows the last P3 one.
    assert anchors[13600].tolist() == [-55.5, -55.5, 71.5, 71.5]


def test_toy_config_two_levels():
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,), strides=(8, 16))
    anchors, per_level = gen(_maps((4, 4), (2, 2)))
    assert per_level == [16, 4]
    assert anchors[5].tolist() == [4.5, 4.5, 19.5, 19.5]
    assert anchors[16].tolist() == [-7.5, -7.5, 23.5, 23.5]


def test_retinanet_p3_cell_anchors():
    expected = torch.tensor([
        [-17.5, -7.5, 25.5, 15.5], [-23.2183, -10.6191, 31.2183, 18.6191], [-30.4228, -14.5488, 38.4228, 22.5488],
        [-11.5, -11.5, 19.5, 19.5], [-15.6587, -15.6587, 23.6587, 23.6587], [-20.8984, -20.8984, 28.8984, 28.8984],
        [-7.5, -19.5, 15.5, 27.5], [-10.6191, -25.7381, 18.6191, 33.7381], [-14.5488, -33.5976, 22.5488, 41.5976],
    ])
    sizes = octave_sizes((32, 64, 128, 256, 512), 2.0, 3)
    assert sizes[0] == pytest.approx((32, 40.3175, 50.7968), abs=1e-4)
    cell = generate_cell_anchors(8, sizes[0], (0.5, 1.0, 2.0))
    torch.testing.assert_close(cell, expected, atol=1e-3, rtol=0)


def test_half_to_even_rounding():
    # ratio 0.5 at stride 8: ws = round(11.31) = 11, hs = round(5.5) = 6 (not 5, not 7)
    w = generate_cell_anchors(8, (8,), (0.5,))[0]
    assert (w[2] - w[0] + 1).item() == 11 and (w[3] - w[1] + 1).item() == 6
    # ratio 2.5 at stride 4: ws = round(2.53) = 3, hs = round(7.5) = 8
    w = generate_cell_anchors(4, (4,), (2.5,))[0]
    assert (w[2] - w[0] + 1).item() == 3 and (w[3] - w[1] + 1).item() == 8


def test_multiple_anchors_per_location_order():
    gen = AnchorGenerator(sizes=((32, 64),), aspect_ratios=(0.5, 1.0, 2.0), strides=(8,))
    assert gen.num_anchors_per_location() == [6]
    anchors, _ = gen(_maps((3, 5)))
    cell = gen.cell_anchors[0]
    for y in range(3):
        for x in range(5):
            for a in range(6):
                shift = torch.tensor([x * 8.0, y * 8.0, x * 8.0, y * 8.0])
                assert torch.equal(anchors[(y * 5 + x) * 6 + a], cell[a] + shift)


def test_anchors_follow_module_device_and_dtype(atss_gen):
    anchors, _ = atss_gen(_maps((2, 2), (1, 1), (1, 1), (1, 1), (1, 1)))
    assert anchors.dtype == torch.float32 and anchors.device == atss_gen.cell_anchors[0].device


def test_bad_config_is_reported():
    c = _cfg.clone()
    c.MODEL.ATSS.ANCHOR_SIZES = (64, 128)
    with pytest.raises(ValueError, match="ANCHOR_SIZES"):
        make_anchor_generator_atss(c)
    gen = make_anchor_generator_atss(_cfg.clone())
    with pytest.raises(ValueError, match="5 anchor strides"):
        gen(_maps((4, 4)))
