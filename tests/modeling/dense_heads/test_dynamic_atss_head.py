"""The Dynamic ATSS head: ATSS's modules and inference, its own assignment and loss (atss_heads §8)."""
import torch

from atss_core.modeling.assigners import dynamic_atss_assign
from atss_core.modeling.detector import build_detection_model
from atss_core.modeling.losses import dynamic_atss_loss
from atss_core.modeling.utils import DensePredictions


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_r50_model_has_the_atss_r50_state_dict(head_config):
    # Released Dynamic ATSS weights load: same keys and shapes as ATSS R-50 (329 keys, framework §3.6).
    with torch.device("meta"):  # shapes and keys only
        dynamic = _shapes(build_detection_model(head_config("DYNAMIC_ATSS_ON")))
        assert dynamic == _shapes(build_detection_model(head_config("ATSS_ON")))
    assert len(dynamic) == 329 and dynamic["rpn.head.centerness.weight"] == (1, 256, 3, 3)


def test_wiring(small_head):
    head = small_head("DYNAMIC_ATSS_ON", TOPK=5, POSITIVE_TYPE="SSC")
    # POSITIVE_TYPE is ignored; TOPK is read.
    assert head.assign.rule is dynamic_atss_assign and head.assign.params == {"topk": 5, "num_anchors_per_loc": 1}
    assert head.loss.func is dynamic_atss_loss and head.loss.keywords["gamma"] == 2.0
    assert head.loss.keywords["box_coder"] is head.postprocessor.box_coder


def test_assignment_reads_the_current_predictions(small_head, feature_batch, boxes_target):
    atss, dynamic = small_head("ATSS_ON", TOPK=2), small_head("DYNAMIC_ATSS_ON", TOPK=2)
    anchors, per_level = dynamic.anchor_generator(feature_batch()[1])
    target = boxes_target([[10, 8, 50, 40]], [2])
    r = len(anchors)
    zero = DensePredictions(torch.zeros(r, 5), torch.zeros(r, 4), torch.zeros(r))
    # Zero deltas decode to the anchors, so Dynamic ATSS equals ATSS (atss_heads §8.2 invariant).
    expected = atss.assign(anchors, per_level, target, zero).labels
    assert torch.equal(dynamic.assign(anchors, per_level, target, zero).labels, expected)
    # The P4 anchor nearest the gt centre (30, 24) is a candidate that ATSS leaves negative;
    # once its prediction hits the gt exactly, Dynamic ATSS takes it.
    k = 96 + 1 * 6 + 1  # level 1 (after 96 P3 anchors), y = 1, x = 1: centre (24, 24)
    assert expected[k] == 0
    bbox_reg = zero.bbox_reg.clone()
    bbox_reg[k] = dynamic.postprocessor.box_coder.encode(target.bbox[0], anchors[k])
    labels = dynamic.assign(anchors, per_level, target, zero._replace(bbox_reg=bbox_reg)).labels
    assert labels[k] == 2


def test_inference_equals_atss_with_the_same_weights(small_head, feature_batch):
    atss, dynamic = small_head("ATSS_ON", INFERENCE_TH=0.0), small_head("DYNAMIC_ATSS_ON", INFERENCE_TH=0.0)
    dynamic.load_state_dict(atss.state_dict())
    images, feats = feature_batch()
    with torch.no_grad():
        expected, got = atss.eval()(images, feats)[0], dynamic.eval()(images, feats)[0]
    for a, b in zip(expected, got):
        assert len(a) > 0 and torch.equal(a.bbox, b.bbox)
        assert torch.equal(a.get_field("scores"), b.get_field("scores"))
