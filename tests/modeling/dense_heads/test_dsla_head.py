"""The DSLA DenseHead built from the config (dsla.md §1, §4, §8.1, §8.7-9, §8.8), its
configs (§5, §8.9) and one training step of the toy detector."""
import math

import pytest
import torch

from atss_core.layers import FrozenBatchNorm2d
from atss_core.layers.misc import DFConv2d
from atss_core.modeling.anchors import PointGenerator
from atss_core.modeling.dense_heads import DENSE_HEADS, build_dense_head
from atss_core.modeling.detector import build_detection_model
from atss_core.modeling.utils import DensePredictions
from atss_core.solver import make_lr_scheduler, make_optimizer
from atss_core.solver.lr_scheduler import warmup_multistep_factor
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList
from tests.modeling.dense_heads.conftest import config_from

R50 = "configs/dsla/dsla_R_50_FPN_1x.yaml"
R101 = "configs/dsla/dsla_dcn_R_101_FPN_ms_2x.yaml"
TOY = "configs/quickstart/dsla_toy.yaml"


def _cfg_from(path=R50, **dsla):
    return config_from(path, "DSLA", **dsla)


def _head(channels=256, **dsla):
    return build_dense_head(_cfg_from(**dsla), channels)


def _features(n=2, channels=32, seed=0):
    """Padded 64x96 batch: P3..P7 maps 8x12, 4x6, 2x3, 1x2, 1x1."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, h, w, generator=g) for h, w in [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]]


def _target(boxes, labels, size=(96, 64)):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return t


# ----------------------------------------------------------------------------- structure and init (§1.3, §8.1)
def test_r50_head_keys_and_parameter_count():
    assert "DSLA_ON" in DENSE_HEADS
    head = _head()
    sd = head.state_dict()
    assert len(sd) == 33 and all(k.startswith("head.") for k in sd)  # no anchor buffers
    assert "head.cls_tower.0.bias" not in sd and "head.centerness.weight" not in sd
    assert tuple(sd["head.cls_logits.weight"].shape) == (80, 256, 3, 3)
    assert tuple(sd["head.bbox_tower.10.weight"].shape) == (256,)
    assert sum(p.numel() for p in head.parameters()) == 4916313


def test_tricks_head_keys_and_parameter_count():
    head = _head(CONV_BIAS=True, USE_DCN_IN_TOWER=True)
    sd = head.state_dict()
    assert len(sd) == 45
    assert tuple(sd["head.cls_tower.9.offset.weight"].shape) == (27, 256, 3, 3)
    assert tuple(sd["head.bbox_tower.9.conv.bias"].shape) == (256,)
    assert sum(p.numel() for p in head.parameters()) == 5042831


def test_initialisation():
    head = _head(CONV_BIAS=True, USE_DCN_IN_TOWER=True).head
    assert head.cls_logits.bias.detach().tolist() == pytest.approx([-math.log(99)] * 80, abs=1e-6)
    assert -math.log(99) == pytest.approx(-4.595120, abs=1e-6)
    for conv in (head.cls_tower[0], head.bbox_tower[3], head.cls_logits, head.bbox_pred):
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert conv.weight.mean().abs().item() < 1e-3
    assert not head.bbox_pred.bias.any() and not head.cls_tower[0].bias.any()
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    dcn = [m for m in head.modules() if isinstance(m, DFConv2d)]
    assert len(dcn) == 2 and all(not m.offset.weight.any() and not m.offset.bias.any() for m in dcn)


def test_points_have_no_half_stride_offset():
    cells, counts = PointGenerator((8,), offset=_cfg_from().MODEL.DSLA.POINT_OFFSET)([torch.zeros(1, 1, 2, 3)])
    centres = torch.stack([(cells[:, 0] + cells[:, 2]) / 2, (cells[:, 1] + cells[:, 3]) / 2], 1)
    assert counts == [6]
    assert centres.tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]


@pytest.mark.parametrize("norm_reg", [False, True])
def test_box_outputs_in_train_and_eval_and_their_units(norm_reg):
    """§8.7-9: the tower output does not depend on the mode; with NORM_REG_TARGETS it is
    in strides (decoded x stride), otherwise pixels."""
    dense = _head(channels=32, NUM_CONVS=1, NORM_REG_TARGETS=norm_reg)
    feats = _features(n=2)
    train = dense.train().head(feats)[1]
    evaluation = dense.eval().head(feats)[1]
    for a, b in zip(train, evaluation):
        assert torch.equal(a, b)
    cells, _ = dense.anchor_generator(feats)
    reg = torch.cat([r[:1].permute(0, 2, 3, 1).reshape(-1, 4) for r in train])
    boxes = dense.postprocessor.box_coder.decode(reg, cells)
    stride = (cells[:, 2] - cells[:, 0])[:, None] if norm_reg else 1.0
    centre = (cells[:, :2] + cells[:, 2:]) / 2
    torch.testing.assert_close(boxes, torch.cat([centre - reg[:, :2] * stride, centre + reg[:, 2:] * stride], 1))
    assert (reg >= 0).all()


# ----------------------------------------------------------------------------- training flow
def test_training_with_an_image_without_gts():
    dense = _head(channels=32, NUM_CONVS=1, NUM_CLASSES=5).train()
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (54, 76)])
    targets = [_target([[10, 10, 50, 40], [30, 20, 90, 60]], [1, 3]), _target([], [], size=(76, 54))]
    _, losses = dense(images, _features(), targets)
    assert sorted(losses) == ["loss_bbox", "loss_cls"]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dense.parameters())
    _, only_empty = dense(images, _features(), [_target([], [], size=(96, 64))] * 2)
    assert only_empty["loss_bbox"].item() == 0 and only_empty["loss_cls"] > 0


# ----------------------------------------------------------------------------- inference (§4, §8.8)
def _post(**kw):
    return _head(channels=32, NUM_CONVS=1, NUM_CLASSES=3, **kw).postprocessor


def _logit(p):
    return math.log(p / (1 - p))


def test_decode_clip_to_the_unpadded_image_and_rescale():
    cells, counts = PointGenerator((8,), offset=0.0)([torch.zeros(1, 1, 2, 3)])
    logits = torch.full((1, 6, 2), -10.0)
    logits[0, 5, 0] = _logit(0.9)  # point (16, 8)
    reg = torch.ones(1, 6, 4)
    reg[0, 5] = torch.tensor([20.0, 10, 5, 5])
    (result,) = _post()(DensePredictions(logits, reg, None), cells, counts, [(12, 18)])
    assert result.box_offset == 0 and result.size == (18, 12)
    assert result.bbox.tolist() == [[0, 0, 18, 12]]  # decoded (-4, -2, 21, 13)
    assert result.get_field("labels").tolist() == [1]
    assert result.get_field("scores").tolist() == pytest.approx([0.9])
    assert result.resize((9, 6)).bbox.tolist() == [[0, 0, 9, 6]]


def test_top_k_locations_come_before_the_threshold():
    post = _post()
    post.pre_nms_top_n = 2
    cells = torch.tensor([[-4.0, -4, 4, 4], [100, -4, 108, 4], [-4, 100, 4, 108]])
    probs = torch.tensor([[[0.9, 0.3], [0.8, 0.01], [0.7, 0.6]]])
    preds = DensePredictions(torch.log(probs / (1 - probs)), torch.ones(1, 3, 4), None)
    boxes, scores, labels, valid = post.select_level(preds, cells)
    kept = sorted(zip([round(v, 6) for v in scores[valid].tolist()], labels[valid].tolist()), reverse=True)
    # Locations 0 and 1 by best class; then every class above 0.05: (0.3, class 2) is in,
    # location 2 is out although 0.7 and 0.6 beat 0.3 (pair ranking would keep 0.9 and 0.8).
    assert kept == [(0.9, 1), (0.8, 1), (0.3, 2)]


def test_each_level_keeps_1000_locations_and_the_threshold_is_strict():
    post = _post()
    g = torch.Generator().manual_seed(0)
    n = 5000
    cells = torch.zeros(n, 4)
    logits = torch.randn(1, n, 2, generator=g) - 3
    boxes, scores, labels, valid = post.select_level(DensePredictions(logits, torch.ones(1, n, 4), None), cells)
    assert scores.shape == (1, 2000)
    best = logits.sigmoid().max(dim=2).values[0]
    assert torch.equal(scores.reshape(1000, 2).max(dim=1).values.sort().values, best.topk(1000).values.sort().values)
    assert torch.equal(valid, scores > 0.05)
    # A probability exactly at the threshold is dropped.
    probs = torch.tensor([[[0.5, 0.01]]]).logit().sigmoid()
    post.pre_nms_thresh = probs[0, 0, 0].item()
    assert not post.select_level(DensePredictions(probs.logit(), torch.ones(1, 1, 4), None), cells[:1])[3].any()


def _boxlist(boxes, scores, labels):
    b = BoxList(torch.tensor(boxes, dtype=torch.float32), (200, 200), box_offset=0)
    b.add_field("scores", torch.tensor(scores))
    b.add_field("labels", torch.tensor(labels))
    return b


def test_classwise_nms_at_0_6_and_the_cap():
    post = _post()
    out = post.select_over_all_levels(
        _boxlist([[0, 0, 100, 100], [0, 0, 100, 61], [0, 0, 100, 59], [0, 0, 100, 61]], [0.9, 0.8, 0.7, 0.6], [1, 1, 2, 2])
    )
    # Class 1: IoU 0.61 > 0.6 suppresses the lower box; class 2: IoU 59/61 suppresses the lower one.
    assert sorted(out.get_field("scores").tolist()) == pytest.approx([0.7, 0.9])
    out = post.select_over_all_levels(_boxlist([[0, 0, 100, 100], [0, 0, 100, 59]], [0.9, 0.8], [1, 1]))
    assert len(out) == 2  # IoU 0.59 keeps both
    out = post.select_over_all_levels(_boxlist([[0, 0, 100, 100], [0, 0, 100, 100]], [0.9, 0.8], [1, 2]))
    assert len(out) == 2  # other classes never suppress
    many = _boxlist([[i * 2.0, 0, i * 2 + 1, 1] for i in range(150)], torch.rand(150).tolist(), [1] * 150)
    out = post.select_over_all_levels(many)
    assert len(out) == 100
    assert out.get_field("scores").sort().values.tolist() == many.get_field("scores").topk(100).values.sort().values.tolist()


# ----------------------------------------------------------------------------- configs (§5, §8.9, spec §2.1)
def test_r50_config_builds_the_logged_model():
    model = build_detection_model(_cfg_from(R50))
    body = model.backbone.body
    assert all(isinstance(m, FrozenBatchNorm2d) for m in body.modules() if "BatchNorm" in type(m).__name__)
    assert not any(p.requires_grad for n, p in body.named_parameters() if n.startswith(("stem.", "layer1.")))
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)  # caffe style
    assert model.backbone.fpn.top_blocks.p6.in_channels == 256  # P6 from P5
    assert model.rpn.postprocessor.box_offset == 0
    assert len(model.state_dict()) == 314


def test_r101_config_builds_the_logged_model():
    cfg = _cfg_from(R101)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 800)
    model = build_detection_model(cfg)
    body = model.backbone.body
    assert body.layer2[0].conv2.conv.stride == (2, 2)  # pytorch style, DCN v1 in res3-res5
    assert not body.layer2[0].conv2.with_modulated_dcn and not body.layer2[0].conv2.offset.weight.any()
    assert body.layer3[0].bn1.weight.requires_grad
    assert len(model.state_dict()) == 641


def _groups_by_name(cfg, model):
    optimizer = make_optimizer(cfg, model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return {n: (g["lr"], g["weight_decay"]) for n, g in zip(names, optimizer.param_groups)}


def test_param_groups_follow_mmcv_rules():
    cfg = _cfg_from(R50)
    head = build_dense_head(cfg, 32)
    groups = _groups_by_name(cfg, head)
    assert groups["head.cls_tower.1.weight"] == (0.01, 1e-4)  # GN
    assert groups["head.cls_tower.1.bias"] == (0.01, 1e-4)
    assert groups["head.cls_logits.bias"] == (0.02, 0.0)
    assert groups["head.cls_logits.weight"] == (0.01, 1e-4)
    assert groups["head.scales.0.scale"] == (0.01, 1e-4)


def test_schedules_in_iterations():
    c = _cfg_from(R50).SOLVER
    assert (tuple(c.STEPS), c.MAX_ITER, c.CLIP_GRAD_NORM) == ((8 * 7330, 11 * 7330), 12 * 7330, 35.0)
    lr = lambda it: c.BASE_LR * warmup_multistep_factor(  # noqa: E731
        it, c.STEPS, c.GAMMA, c.WARMUP_FACTOR, c.WARMUP_ITERS, c.WARMUP_METHOD
    )
    expected = {0: 0.0033333, 499: 0.0033333, 500: 0.01, 58639: 0.01, 58640: 0.001, 80629: 0.001, 80630: 0.0001, 87959: 0.0001}
    for it, value in expected.items():
        assert lr(it) == pytest.approx(value, rel=1e-4), it
    c = _cfg_from(R101).SOLVER
    assert (tuple(c.STEPS), c.MAX_ITER, c.CLIP_GRAD_NORM) == ((16 * 7330, 22 * 7330), 24 * 7330, 0.0)
    factor = warmup_multistep_factor(49, c.STEPS, c.GAMMA, c.WARMUP_FACTOR, c.WARMUP_ITERS, c.WARMUP_METHOD)
    assert c.BASE_LR * factor == pytest.approx(9.99e-4, rel=1e-3)
    # The scheduler object agrees (bias groups at twice the rate).
    cfg = _cfg_from(R50)
    head = build_dense_head(cfg, 32)
    optimizer = make_optimizer(cfg, head)
    sched = make_lr_scheduler(cfg, optimizer)
    assert max(g["lr"] for g in optimizer.param_groups) == pytest.approx(2 * 0.0033333, rel=1e-4)
    assert sched.get_last_lr()[0] == pytest.approx(0.0033333, rel=1e-4)


def test_toy_detector_trains_and_predicts():
    cfg = _cfg_from(TOY)
    model = build_detection_model(cfg)
    images = ImageList(torch.randn(2, 3, 64, 64), [(64, 64), (60, 50)])
    targets = [_target([[5, 5, 40, 30]], [2], size=(64, 64)), _target([], [], size=(50, 60))]
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        results = model(images)
    assert [r.size for r in results] == [(64, 64), (50, 60)]
    assert all(r.box_offset == 0 and len(r) <= 100 for r in results)
