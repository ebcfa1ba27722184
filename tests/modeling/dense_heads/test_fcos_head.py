"""The FCOS head from configs/fcos: init, checkpoint keys, wiring (atss_heads §9.1, framework §3.6)."""
import math

import pytest
import torch

from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.assigners import fcos_assign
from atss_core.modeling.dense_heads import build_dense_head


def test_c1_init_and_r50_keys(head_config):
    head = build_dense_head(head_config("FCOS_ON"), 256)
    sd = head.state_dict()
    # The ATSS head's names and shapes (A = 1) and no anchor buffers.
    assert len(sd) == 43 and all(k.startswith("head.") for k in sd)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["head.cls_tower.9.weight"] == (256, 256, 3, 3) and shapes["head.bbox_tower.10.bias"] == (256,)
    assert shapes["head.cls_logits.weight"] == (80, 256, 3, 3) and shapes["head.bbox_pred.weight"] == (4, 256, 3, 3)
    assert shapes["head.centerness.weight"] == (1, 256, 3, 3) and shapes["head.scales.4.scale"] == (1,)
    assert torch.allclose(sd["head.cls_logits.bias"], torch.full((80,), -math.log(99)))
    assert sd["head.cls_tower.0.weight"].std().item() == pytest.approx(0.01, rel=0.05)
    assert all(sd[f"head.scales.{i}.scale"].item() == 1.0 for i in range(5))
    dcn = build_dense_head(head_config("FCOS_ON", USE_DCN_IN_TOWER=True), 256).state_dict()
    assert len(dcn) == 47 and tuple(dcn["head.cls_tower.9.offset.weight"].shape) == (27, 256, 3, 3)


def test_c1_output_shapes(small_head):
    logits, reg, ctr = small_head("FCOS_ON").head([torch.randn(2, 32, 4, 4), torch.randn(2, 32, 2, 2)])
    assert logits[0].shape == (2, 5, 4, 4) and reg[1].shape == (2, 4, 2, 2) and ctr[0].shape == (2, 1, 4, 4)
    assert (reg[0] > 0).all()  # exp of the scaled output


@pytest.mark.parametrize(
    "name, in_strides, activation, on_reg, radius, loss_type",
    [("FCOS_ON", False, "exp", False, 0.0, "iou"), ("FCOS_ON imprv", True, "relu", True, 1.5, "giou")],
)
def test_wiring(small_head, name, in_strides, activation, on_reg, radius, loss_type):
    head = small_head(name)
    assert isinstance(head.anchor_generator, PointGenerator) and head.anchor_generator.strides == (8, 16, 32, 64, 128)
    assert head.postprocessor.box_coder.in_strides is in_strides and head.loss.keywords["box_coder"].in_strides is in_strides
    assert head.head.reg_activation == activation and head.head.centerness_on_reg is on_reg
    assert head.assign.rule is fcos_assign and head.assign.params["center_sampling_radius"] == radius
    assert head.loss.keywords["box_loss"].keywords == {"loss_type": loss_type}
    assert head.loss.keywords["reg_loss_weight"] == 1.0
    assert (head.postprocessor.nms_thresh, head.postprocessor.pre_nms_thresh) == (0.6, 0.05)


def test_distances_in_strides_are_scaled_back_at_test_time(small_head, feature_batch):
    # bbox_pred outputs 0.5 everywhere: every P7 box (stride 128) spans 2 x 0.5 x 128 px around its point.
    head = small_head("FCOS_ON imprv", INFERENCE_TH=0.0).eval()
    torch.nn.init.zeros_(head.head.bbox_pred.weight)
    torch.nn.init.constant_(head.head.bbox_pred.bias, 0.5)
    images, feats = feature_batch()
    cells, _ = head.anchor_generator(feats)
    boxes = head.postprocessor.box_coder.decode(torch.full((len(cells), 4), 0.5), cells)
    assert boxes[-1].tolist() == [0.0, 0.0, 128.0, 128.0] and boxes[0].tolist() == [0.0, 0.0, 8.0, 8.0]
    head.postprocessor.apply_nms = False  # keep every location
    with torch.no_grad():
        det = head(images, feats)[0][0]
    unclipped = det.bbox[det.bbox[:, 2] < 95]  # the image is 96 px wide
    assert set((unclipped[:, 2] - unclipped[:, 0]).tolist()) == {8.0, 16.0, 32.0, 64.0}


def test_bad_config_values(head_config):
    with pytest.raises(ValueError, match="IOU_LOSS_TYPE"):
        build_dense_head(head_config("FCOS_ON", IOU_LOSS_TYPE="diou"), 32)
    with pytest.raises(ValueError, match="FPN_STRIDES"):
        build_dense_head(head_config("FCOS_ON", FPN_STRIDES=[8, 16, 32]), 32)
