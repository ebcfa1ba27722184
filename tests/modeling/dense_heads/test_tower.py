"""Tower structure and init: atss_heads §2.1-2.3 and check C1."""
import math

import pytest
import torch

from atss_core.modeling.dense_heads.tower import Tower


def test_c1_init_and_shapes():
    torch.manual_seed(0)
    tower = Tower(256, num_classes=80)
    assert torch.allclose(tower.cls_logits.bias, torch.full((80,), -math.log(99)))
    assert tower.cls_logits.bias[0].item() == pytest.approx(-4.59512, abs=1e-5)
    for conv in (tower.cls_tower[0], tower.bbox_tower[9], tower.cls_logits, tower.bbox_pred, tower.centerness):
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert conv.weight.mean().abs().item() < 1e-3
    for conv in (tower.cls_tower[3], tower.bbox_pred, tower.centerness):
        assert (conv.bias == 0).all()
    gn = tower.cls_tower[1]
    assert isinstance(gn, torch.nn.GroupNorm) and gn.num_groups == 32 and (gn.weight == 1).all()
    assert len(tower.scales) == 5 and all(s.scale.item() == 1.0 for s in tower.scales)

    feats = [torch.randn(2, 256, 4, 4), torch.randn(2, 256, 2, 2)]
    logits, reg, ctr = tower(feats)
    assert logits[0].shape == (2, 80, 4, 4) and reg[1].shape == (2, 4, 2, 2) and ctr[0].shape == (2, 1, 4, 4)


def test_point_regression_bias_and_relu():
    tower = Tower(32, num_classes=3, num_convs=1, reg_activation="relu", bbox_bias_init=4.0)
    assert (tower.bbox_pred.bias == 4.0).all()
    tower.scales[0].scale.data.fill_(-1.0)  # negative outputs must be cut by the ReLU after the scale
    _, reg, _ = tower([torch.randn(1, 32, 3, 3)])
    assert (reg[0] == 0).all()


def test_scale_multiplies_box_output_only():
    torch.manual_seed(0)
    tower = Tower(32, num_classes=3, num_convs=1)
    x = [torch.randn(1, 32, 3, 3), torch.randn(1, 32, 3, 3)]
    logits, reg, ctr = tower(x)
    tower.scales[1].scale.data.fill_(3.0)
    logits2, reg2, ctr2 = tower(x)
    torch.testing.assert_close(reg2[1], 3 * reg[1])
    torch.testing.assert_close(reg2[0], reg[0])
    torch.testing.assert_close(logits2[1], logits[1])
    torch.testing.assert_close(ctr2[1], ctr[1])


@pytest.mark.parametrize("on_reg", [True, False])
def test_centerness_branch_placement(on_reg):
    tower = Tower(32, num_classes=3, num_convs=1, centerness_on_reg=on_reg)
    _, _, ctr = tower([torch.randn(1, 32, 3, 3)])
    ctr[0].sum().backward()
    cls_grad, box_grad = tower.cls_tower[0].weight.grad, tower.bbox_tower[0].weight.grad
    assert (box_grad is not None) == on_reg and (cls_grad is not None) == (not on_reg)


def test_dcn_tower_keys_and_init():
    torch.manual_seed(0)
    tower = Tower(256, num_classes=80, use_dcn=True)
    keys = {k: tuple(v.shape) for k, v in tower.state_dict().items() if k.startswith("cls_tower.9.")}
    assert keys == {
        "cls_tower.9.offset.weight": (27, 256, 3, 3),
        "cls_tower.9.offset.bias": (27,),
        "cls_tower.9.conv.weight": (256, 256, 3, 3),
        "cls_tower.9.conv.bias": (256,),
    }
    # The offset conv is re-initialised N(0, 0.01) with bias 0 (atss_heads §2.2 step 5) ...
    offset = tower.cls_tower[9].offset
    assert offset.weight.std().item() == pytest.approx(0.01, rel=0.05) and (offset.bias == 0).all()
    # ... while the deformable conv keeps its own uniform(+-1/sqrt(256*9)) init.
    bound = 1 / math.sqrt(256 * 9)
    w = tower.cls_tower[9].conv.weight
    assert w.abs().max().item() <= bound + 1e-7
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    logits, reg, ctr = tower([torch.randn(1, 256, 5, 5)])
    assert logits[0].shape == (1, 80, 5, 5)


def test_retinanet_style_tower_keys():
    tower = Tower(32, num_classes=80, num_anchors=9, use_gn=False, use_centerness=False, num_scales=0)
    keys = set(tower.state_dict())
    assert {k.split(".")[1] for k in keys if k.startswith("cls_tower.")} == {"0", "2", "4", "6"}
    assert not any(k.startswith(("scales", "centerness")) for k in keys)
    logits, reg, ctr = tower([torch.randn(1, 32, 2, 2)])
    assert logits[0].shape == (1, 720, 2, 2) and reg[0].shape == (1, 36, 2, 2) and ctr == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by 32"):
        Tower(48, num_classes=3)
    with pytest.raises(ValueError, match="reg_activation"):
        Tower(32, num_classes=3, reg_activation="softplus")
    with pytest.raises(ValueError, match="6 feature levels but the head has 5 scales"):
        Tower(32, num_classes=3, num_convs=1)([torch.zeros(1, 32, 1, 1)] * 6)
