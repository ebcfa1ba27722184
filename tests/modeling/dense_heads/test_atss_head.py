"""The ATSS DenseHead built from the config: registry, checkpoint keys, train and eval flows."""
import pytest
import torch

from atss_core.config import cfg as _cfg
from atss_core.modeling.dense_heads import DENSE_HEADS, build_dense_head
from atss_core.modeling.dense_heads.dense_head import DenseHead
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList


def _cfg_atss(**atss):
    c = _cfg.clone()
    c.merge_from_file("configs/atss/atss_R_50_FPN_1x.yaml")
    for k, v in atss.items():
        c.MODEL.ATSS[k] = v
    return c


def _small(**atss):
    atss.setdefault("NUM_CLASSES", 6)
    atss.setdefault("NUM_CONVS", 1)
    return build_dense_head(_cfg_atss(**atss), 32)


def _batch(n=2, h=64, w=96, channels=32, seed=0):
    """Padded 64x96 batch: P3..P7 maps 8x12, 4x6, 2x3, 1x2, 1x1."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    feats = [torch.randn(n, channels, fh, fw, generator=g) for fh, fw in sizes]
    images = ImageList(torch.zeros(n, 3, h, w), [(h, w), (h - 10, w - 20)][:n])
    return images, feats


def _target(boxes, labels, size=(96, 64)):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return t


def test_registry_and_flag_checks():
    assert "ATSS_ON" in DENSE_HEADS
    c = _cfg_atss()
    c.MODEL.ATSS_ON = False
    with pytest.raises(ValueError, match="exactly one of MODEL.ATSS_ON, MODEL.DYNAMIC_ATSS_ON"):
        build_dense_head(c, 32)
    c.MODEL.ATSS_ON = c.MODEL.FCOS_ON = True
    with pytest.raises(ValueError, match="ATSS_ON', 'FCOS_ON"):
        build_dense_head(c, 32)


def test_atss_r50_state_dict_keys():
    head = build_dense_head(_cfg_atss(), 256)
    sd = head.state_dict()
    head_keys = [k for k in sd if k.startswith("head.")]
    assert len(head_keys) == 43 and len(sd) == 48
    anchor_keys = [k for k in sd if k.startswith("anchor_generator.")]
    assert anchor_keys == [f"anchor_generator.cell_anchors.{i}" for i in range(5)]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["head.cls_tower.0.weight"] == (256, 256, 3, 3)
    assert shapes["head.cls_tower.10.bias"] == (256,)
    assert shapes["head.bbox_tower.9.weight"] == (256, 256, 3, 3)
    assert shapes["head.cls_logits.weight"] == (80, 256, 3, 3)
    assert shapes["head.bbox_pred.weight"] == (4, 256, 3, 3)
    assert shapes["head.centerness.weight"] == (1, 256, 3, 3)
    assert shapes["head.scales.4.scale"] == (1,)
    assert shapes["anchor_generator.cell_anchors.0"] == (1, 4)
    assert len(list(head.parameters())) == 43
    # Only the tower and the anchors are registered children.
    assert [name for name, _ in head.named_children()] == ["head", "anchor_generator"]


def test_dcn_state_dict_keys():
    sd = build_dense_head(_cfg_atss(USE_DCN_IN_TOWER=True), 256).state_dict()
    assert len([k for k in sd if k.startswith("head.")]) == 47
    assert tuple(sd["head.cls_tower.9.offset.weight"].shape) == (27, 256, 3, 3)
    assert tuple(sd["head.cls_tower.9.conv.bias"].shape) == (256,)
    assert "head.cls_tower.9.weight" not in sd


def test_wiring_from_config():
    head = _small(POSITIVE_TYPE="TOPK", TOPK=5, REGRESSION_TYPE="POINT", NMS_TH=0.5, PRE_NMS_TOP_N=7)
    assert isinstance(head, DenseHead)
    assert head.assign.rule.__name__ == "topk_assign" and head.assign.params == {"topk": 5}
    assert head.postprocessor.nms_thresh == 0.5 and head.postprocessor.pre_nms_top_n == 7
    assert head.postprocessor.box_coder.mode == "POINT" and head.postprocessor.box_coder.point_scale == 8.0
    assert (head.head.bbox_pred.bias == 4.0).all()
    c = _cfg_atss(NUM_CONVS=1)
    c.TEST.BBOX_AUG.ENABLED = True
    assert build_dense_head(c, 32).postprocessor.apply_nms is False
    c.TEST.BBOX_AUG.VOTE = True
    assert build_dense_head(c, 32).postprocessor.apply_nms is True


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("POSITIVE_TYPE", "MAXIOU", "POSITIVE_TYPE"),
        ("REGRESSION_TYPE", "LTRB", "REGRESSION_TYPE"),
    ],
)
def test_bad_config_values(key, value, match):
    with pytest.raises(ValueError, match=match):
        _small(**{key: value})


def test_point_needs_one_anchor_per_location():
    with pytest.raises(ValueError, match="one anchor per location"):
        _small(REGRESSION_TYPE="POINT", ASPECT_RATIOS=(0.5, 1.0, 2.0))


@pytest.mark.parametrize("positive_type", ["ATSS", "SSC", "IoU", "TOPK"])
def test_train_step_with_an_empty_image(positive_type):
    torch.manual_seed(0)
    head = _small(POSITIVE_TYPE=positive_type).train()
    images, feats = _batch()
    targets = [_target([[10, 8, 50, 40], [60, 20, 90, 60]], [2, 5]), _target([], [])]
    detections, losses = head(images, feats, targets)
    assert detections is None and set(losses) == {"loss_cls", "loss_reg", "loss_centerness"}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    assert losses["loss_reg"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_c16_batch_of_empty_images_keeps_the_graph():
    torch.manual_seed(0)
    head = _small().train()
    images, feats = _batch()
    losses = head(images, feats, [_target([], []), _target([], [])])[1]
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    assert losses["loss_reg"].item() == 0 and losses["loss_centerness"].item() == 0
    sum(losses.values()).backward()
    box_params = [head.head.bbox_tower[0].weight, head.head.bbox_pred.weight, head.head.centerness.weight]
    box_params += [s.scale for s in head.head.scales]
    assert all(p.grad is not None for p in box_params)


def test_assignment_sees_all_anchors_in_flatten_order():
    head = _small(TOPK=2)
    images, feats = _batch()
    seen = {}
    real_assign = head.assign

    def spy(anchors, num_per_level, target, predictions):
        seen.update(anchors=anchors, num_per_level=num_per_level, predictions=predictions)
        return real_assign(anchors, num_per_level, target, predictions)

    head.assign = spy
    head.train()(images, feats, [_target([[10, 8, 50, 40]], [3])] * 2)
    assert seen["num_per_level"] == [96, 24, 6, 2, 1]
    assert seen["anchors"].shape == (129, 4) and seen["predictions"].cls_logits.shape == (129, 5)
    assert not seen["predictions"].cls_logits.requires_grad
    # Row (level 1, y=1, x=2) = 96 + 1*6 + 2: anchor centre (16*2.5, 16*1.5).
    a = seen["anchors"][96 + 8]
    assert ((a[0] + a[2]) / 2).item() == 40 and ((a[1] + a[3]) / 2).item() == 24


def test_train_needs_targets():
    head = _small().train()
    with pytest.raises(ValueError, match="targets"):
        head(*_batch())
    with pytest.raises(ValueError, match="1 targets for a batch of 2"):
        head(*_batch(), [_target([], [])])


def test_eval_outputs():
    torch.manual_seed(0)
    head = _small(INFERENCE_TH=0.0).eval()
    images, feats = _batch()
    with torch.no_grad():
        detections, losses = head(images, feats)
    assert losses == {} and len(detections) == 2
    for det, (h, w) in zip(detections, images.image_sizes):
        assert det.size == (w, h) and len(det) > 0
        assert det.get_field("labels").dtype == torch.int64
        assert set(det.fields()) == {"scores", "labels"}
        labels = det.get_field("labels")
        assert labels.min() >= 1 and labels.max() <= 5
        assert (det.bbox[:, 0::2] >= 0).all() and (det.bbox[:, 0::2] <= w - 1).all()
        assert (det.bbox[:, 1::2] >= 0).all() and (det.bbox[:, 1::2] <= h - 1).all()
        assert len(det) <= 100


def test_low_precision_features_give_float32_losses_and_boxes():
    torch.manual_seed(0)
    head = _small()
    images, feats = _batch()
    targets = [_target([[10, 8, 50, 40]], [2]), _target([[5, 5, 30, 30]], [1])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = head.train()(images, feats, targets)[1]
        detections = head.eval()(images, feats)[0]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert detections[0].get_field("scores").dtype == torch.float32
