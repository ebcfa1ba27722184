"""The RetinaNet head from configs/retinanet: keys, anchors, init, score (atss_heads §9.2, framework §3.6)."""
import math

import pytest
import torch

from atss_core.modeling.assigners import max_iou_assign
from atss_core.modeling.dense_heads import build_dense_head

RETINANET_P3 = [
    [-17.5, -7.5, 25.5, 15.5], [-23.2183, -10.6191, 31.2183, 18.6191], [-30.4228, -14.5488, 38.4228, 22.5488],
    [-11.5, -11.5, 19.5, 19.5], [-15.6587, -15.6587, 23.6587, 23.6587], [-20.8984, -20.8984, 28.8984, 28.8984],
    [-7.5, -19.5, 15.5, 27.5], [-10.6191, -25.7381, 18.6191, 33.7381], [-14.5488, -33.5976, 22.5488, 41.5976],
]


def test_r50_keys_anchors_and_init(head_config):
    sd = build_dense_head(head_config("RETINANET_ON"), 256).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    convs = {f"head.{t}.{i}.{p}" for t in ("cls_tower", "bbox_tower") for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    heads = {f"head.{m}.{p}" for m in ("cls_logits", "bbox_pred") for p in ("weight", "bias")}
    anchors = {f"anchor_generator.cell_anchors.{i}" for i in range(5)}
    assert set(shapes) == convs | heads | anchors  # no GroupNorm, scales or centerness
    assert shapes["head.cls_logits.weight"] == (720, 256, 3, 3) and shapes["head.bbox_pred.bias"] == (36,)
    assert all(shapes[k] == (9, 4) for k in anchors)
    assert torch.allclose(sd["anchor_generator.cell_anchors.0"], torch.tensor(RETINANET_P3), atol=1e-3)
    # Level 4 (stride 128): sizes 512 x 2^(i/3), ratio 1 -> the middle row is 512 wide (+1) around 64.
    assert sd["anchor_generator.cell_anchors.4"][3].tolist() == [-191.5, -191.5, 319.5, 319.5]
    assert torch.allclose(sd["head.cls_logits.bias"], torch.full((720,), -math.log(99)))
    assert sd["head.bbox_tower.6.weight"].std().item() == pytest.approx(0.01, rel=0.05)
    assert (sd["head.bbox_pred.bias"] == 0).all()


def test_wiring(small_head):
    head = small_head("RETINANET_ON")
    assert head.num_anchors == 9 and head.assign.rule is max_iou_assign
    assert head.assign.params == {"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.4}
    assert head.loss.keywords["smooth_l1_beta"] == 0.11 and head.loss.keywords["reg_norm"] == 4.0
    assert (head.postprocessor.nms_thresh, head.postprocessor.pre_nms_thresh) == (0.4, 0.05)
    assert head.postprocessor.pre_nms_top_n == 1000 and head.postprocessor.detections_per_img == 100


def test_score_is_the_class_probability(small_head, feature_batch):
    # Every class probability 0.3: ATSS/FCOS would report sqrt(0.3 x centerness); RetinaNet reports 0.3.
    head = small_head("RETINANET_ON").eval()
    torch.nn.init.zeros_(head.head.cls_logits.weight)
    torch.nn.init.constant_(head.head.cls_logits.bias, math.log(0.3 / 0.7))
    with torch.no_grad():
        detections = head(*feature_batch())[0]
    for det in detections:
        assert len(det) > 0 and torch.allclose(det.get_field("scores"), torch.tensor(0.3))
        # Class-aware NMS at 0.4: for each class, no two kept boxes overlap by IoU (+1) > 0.4.
        labels = det.get_field("labels")
        for c in labels.unique():
            boxes = det.bbox[labels == c]
            lt = torch.max(boxes[:, None, :2], boxes[None, :, :2])
            rb = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
            inter = (rb - lt + 1).clamp(min=0).prod(-1)
            area = (boxes[:, 2:] - boxes[:, :2] + 1).prod(-1)
            iou = inter / (area[:, None] + area[None] - inter)
            assert (iou.fill_diagonal_(0) <= 0.4 + 1e-6).all()


def test_bad_anchor_config_names_the_retinanet_key(head_config):
    with pytest.raises(ValueError, match="MODEL.RETINANET.ANCHOR_SIZES"):
        build_dense_head(head_config("RETINANET_ON", ANCHOR_SIZES=(32, 64)), 32)
