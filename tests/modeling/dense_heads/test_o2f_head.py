"""The O2F DenseHead built from the config: structure and init (o2f.md §11 C1), shapes and
points (C2), inference (C9), the head-level invariants of C10, the T schedule reaching the
assignment (§9.3-9.4), training with zero and one gt (spec C23), low precision (C18)."""
import math

import pytest
import torch
from torch import nn

from atss_core.layers import FrozenBatchNorm2d
from atss_core.modeling.dense_heads import DENSE_HEADS, build_dense_head
from atss_core.modeling.dense_heads.o2f import O2FDenseHead
from atss_core.modeling.detector import build_detection_model
from atss_core.modeling.utils import flatten_head_outputs
from atss_core.solver import make_optimizer
from atss_core.structures.image_list import ImageList
from tests.modeling.dense_heads.conftest import config_from

R50 = "configs/o2f/o2f_R_50_FPN_1x.yaml"


def _cfg_from(path=R50, **o2f):
    return config_from(path, "O2F", **o2f)


def _head(channels=256, cfg=None, **o2f):
    torch.manual_seed(0)
    return build_dense_head(cfg or _cfg_from(**o2f), channels)


def _small(**o2f):
    """6 classes, 1 tower conv, 32 channels (objectness 32)."""
    return _head(32, **{"NUM_CLASSES": 6, "NUM_CONVS": 1, "CHANNELS": 32, "OBJ_CHANNELS": 32, **o2f})


# ----------------------------------------------------------------------------- C1: structure and init
def test_keys_and_parameter_count():
    assert "O2F_ON" in DENSE_HEADS
    dense = _head()
    assert isinstance(dense, O2FDenseHead)
    sd = dense.state_dict()
    assert len(sd) == 55 and all(k.startswith("head.") for k in sd)  # no anchor buffers, no T
    shapes = {
        "head.cls_tower.0.bias": (256,),
        "head.bbox_tower.10.weight": (256,),
        "head.centerness_tower.0.weight": (64, 256, 3, 3),
        "head.centerness_tower.1.weight": (64,),
        "head.centerness_tower.6.weight": (64, 64, 3, 3),
        "head.centerness_tower.7.bias": (64,),
        "head.centerness.weight": (1, 64, 3, 3),
        "head.cls_logits.weight": (80, 256, 3, 3),
        "head.bbox_pred.weight": (4, 256, 3, 3),
        "head.scales.4.scale": (1,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert sum(p.numel() for p in dense.parameters()) == 5140698
    assert sum(p.numel() for p in _head(NUM_CLASSES=2).parameters()) == 4958603


def test_initialisation():
    dense = _head()
    head = dense.head
    assert head.cls_logits.bias.detach().tolist() == pytest.approx([-4.595120] * 80, abs=1e-6)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 + 4 + 3 + 3
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
        if conv is not head.cls_logits:
            assert not conv.bias.any()
    norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 11 and all(m.num_groups == 32 and m.eps == 1e-5 for m in norms)
    assert all((m.weight == 1).all() and not m.bias.any() for m in norms)
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 256, s, s, generator=g) for s in (8, 4, 2, 1, 1)]
    with torch.no_grad():
        logits, _, objectness = head(feats)
    assert torch.cat([x.flatten() for x in logits]).sigmoid().mean().item() == pytest.approx(0.01, rel=0.1)
    assert torch.cat([x.flatten() for x in objectness]).sigmoid().mean().item() == pytest.approx(0.5, rel=0.1)


def test_init_keys_are_honoured():
    head = _small(INIT_STD=0.05, SCALE_INIT=2.0, PRIOR_PROB=0.1).head
    assert head.centerness.weight.std().item() == pytest.approx(0.05, rel=0.2)
    assert head.bbox_tower[0].weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert [s.scale.item() for s in head.scales] == [2.0] * 5
    assert head.cls_logits.bias[0].item() == pytest.approx(-math.log(9), abs=1e-6)


# ----------------------------------------------------------------------------- C2: shapes, units, points
def test_shapes_of_an_800_by_1216_input():
    dense = _head(32, NUM_CONVS=1, CHANNELS=32, OBJ_CHANNELS=32)
    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    feats = [torch.randn(2, 32, h, w) for h, w in sizes]
    with torch.no_grad():
        logits, reg, objectness = dense.head(feats)
    assert [tuple(x.shape) for x in logits] == [(2, 80, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in reg] == [(2, 4, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in objectness] == [(2, 1, h, w) for h, w in sizes]
    assert all((x >= 0).all() for x in reg)
    cells, counts = dense.anchor_generator(feats)
    assert counts == [h * w for h, w in sizes]
    centres = (cells[:, :2] + cells[:, 2:]) / 2
    assert centres[:2].tolist() == [[4, 4], [12, 4]]
    assert centres[counts[0]].tolist() == [8, 8]  # P4 starts at (0.5 * 16, 0.5 * 16)


def test_objectness_reads_the_bbox_tower_through_its_own_convs_and_boxes_are_in_pixels():
    dense = _small()
    dense.head.scales[1].scale.data.fill_(0.5)
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(1, 32, s, s, generator=g) for s in (4, 2, 2, 2, 2)]
    with torch.no_grad():
        _, reg, objectness = dense.head(feats)
        for level, x in enumerate(feats):
            box_feat = dense.head.bbox_tower(x)
            expected = dense.head.centerness(dense.head.centerness_tower(box_feat))
            torch.testing.assert_close(objectness[level], expected)
            raw = dense.head.bbox_pred(box_feat) * dense.head.scales[level].scale
            torch.testing.assert_close(reg[level], raw.clamp(min=0))
    cells, _ = dense.anchor_generator(feats)
    p4 = reg[1][0, :, 0, 0]  # strides; the coder multiplies by 16
    box = dense.postprocessor.box_coder.decode(p4, cells[16])
    torch.testing.assert_close(box, torch.tensor([8.0, 8, 8, 8]) + torch.tensor([-1, -1, 1, 1]) * 16 * p4)


# ----------------------------------------------------------------------------- C9: inference
class FixedOutputs(nn.Module):
    """A head that returns given per-level outputs whatever the features."""

    def __init__(self, logits, reg, objectness):
        super().__init__()
        self.outputs = ([logits], [reg], [objectness])

    def forward(self, features):
        return self.outputs


def _logit(p):
    return math.log(p / (1 - p))


def _c9_detections(p1_box=(4.0, 4, 4, 4), image_size=(16, 16), **o2f):
    dense = _small(NUM_CLASSES=3, FPN_STRIDES=[8], **o2f).eval()
    logits = torch.tensor([[_logit(0.9), _logit(0.2)], [_logit(0.08), _logit(0.6)]]).T.reshape(1, 2, 1, 2)
    reg = torch.tensor([[4.0, 4, 4, 4], list(p1_box)]).T.reshape(1, 4, 1, 2) / 8  # pixels -> strides
    dense.head = FixedOutputs(logits, reg, torch.zeros(1, 1, 1, 2))  # sigmoid(obj) = 0.5
    images = ImageList(torch.zeros(1, 3, 8, 16), [image_size])
    with torch.no_grad():
        (result,), losses = dense(images, [torch.zeros(1, 32, 1, 2)])
    assert losses == {}
    return result


def test_inference_joint_scores_without_nms():
    result = _c9_detections()
    assert result.get_field("scores").tolist() == pytest.approx([0.45, 0.30, 0.10])
    assert result.get_field("labels").tolist() == [1, 2, 2]
    assert result.bbox.tolist() == [[0, 0, 8, 8], [8, 0, 16, 8], [0, 0, 8, 8]]
    assert result.box_offset == 0


def test_overlapping_boxes_survive_without_nms_and_the_cap_applies():
    # P1 predicts P0's box: class 2 has two identical boxes (0.30 and 0.10).
    assert len(_c9_detections(p1_box=(12.0, 4, -4, 4))) == 3
    assert len(_c9_detections(p1_box=(12.0, 4, -4, 4), USE_NMS=True)) == 2
    cfg = _cfg_from(NUM_CLASSES=3, FPN_STRIDES=[8], NUM_CONVS=1, CHANNELS=32, OBJ_CHANNELS=32)
    cfg.TEST.DETECTIONS_PER_IMG = 2
    dense = build_dense_head(cfg, 32)
    assert dense.postprocessor.detections_per_img == 2 and dense.postprocessor.nms_thresh is None


def test_boxes_are_clipped_to_the_unpadded_image():
    result = _c9_detections(p1_box=(4.0, 10, 20, 4), image_size=(6, 14))
    assert result.size == (14, 6)
    assert result.bbox.tolist() == [[0, 0, 8, 6], [8, 0, 14, 6], [0, 0, 8, 6]]


def test_init_model_finds_nothing_and_a_confident_one_is_capped_and_sorted():
    dense = _small().eval()
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (54, 76)])
    feats = [torch.randn(2, 32, h, w) for h, w in ((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))]
    with torch.no_grad():
        assert [len(r) for r in dense(images, feats)[0]] == [0, 0]
        dense.head.cls_logits.bias.fill_(3.0)
        dense.head.centerness.bias.fill_(3.0)
        dense.postprocessor.detections_per_img = 50
        results = dense(images, feats)[0]
    for r in results:
        scores = r.get_field("scores")
        assert len(r) == 50 and torch.equal(scores, scores.sort(descending=True).values)


# ----------------------------------------------------------------------------- training
def _features(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 32, h, w, generator=g) for h, w in ((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))]


def _images(n=2):
    return ImageList(torch.zeros(n, 3, 64, 96), [(64, 96), (54, 76)][:n])


def test_one_gt_image_next_to_a_zero_gt_image(boxes_target):
    dense = _small().train()
    _, losses = dense(_images(), _features(), [boxes_target([[10, 8, 50, 40]], [2]), boxes_target([], [])])
    assert set(losses) == {"loss_cls", "loss_bbox"}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 and v.dim() == 0 for v in losses.values())
    assert losses["loss_bbox"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dense.parameters())


def test_batch_of_zero_gt_images_keeps_the_graph(boxes_target):
    dense = _small().train()
    losses = dense(_images(), _features(), [boxes_target([], []), boxes_target([], [])])[1]
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    assert losses["loss_bbox"].item() == 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in dense.parameters())
    assert dense.head.bbox_pred.weight.grad.abs().sum() == 0


def test_objectness_is_trained_only_through_the_classification_loss(boxes_target):
    dense = _small().train()
    targets = [boxes_target([[10, 8, 50, 40], [60, 20, 90, 60]], [2, 5]), boxes_target([[5, 5, 30, 30]], [1])]
    losses = dense(_images(), _features(), targets)[1]
    losses["loss_bbox"].backward(retain_graph=True)
    obj_params = list(dense.head.centerness_tower.parameters()) + list(dense.head.centerness.parameters())
    assert all(p.grad is None or not p.grad.any() for p in obj_params)
    losses["loss_cls"].backward()
    assert all(p.grad is not None and p.grad.any() for p in obj_params)


def test_bfloat16_autocast_gives_finite_float32_losses(boxes_target):
    dense = _small()
    targets = [boxes_target([[10, 8, 50, 40], [60, 20, 90, 60]], [2, 5]), boxes_target([[5, 5, 30, 30]], [1])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = dense.train()(_images(), _features(), targets)[1]
        detections = dense.eval()(_images(), _features())[0]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert all(d.bbox.dtype == torch.float32 and torch.isfinite(d.bbox).all() for d in detections)


# ----------------------------------------------------------------------------- T schedule reaches the assignment
def test_training_progress_sets_t_of_the_assignment(boxes_target):
    dense = _small(SCHEDULE_EPOCHS=12)
    assert dense.soft_t == 0.6  # no progress reported
    target = boxes_target([[10, 8, 50, 40], [60, 20, 90, 60]], [2, 5])
    feats = _features()
    cells, counts = dense.anchor_generator(feats)
    with torch.no_grad():
        predictions = flatten_head_outputs(*dense.head(feats), num_anchors=1).image(0)
    first = dense.assign(cells, counts, target, predictions)
    dense.set_train_progress(600, 1200)  # epoch 6 of 12
    assert dense.soft_t == pytest.approx(0.381818, abs=1e-6)
    later = dense.assign(cells, counts, target, predictions)
    assert torch.equal(first.labels, later.labels) and (first.labels > 0).sum() > 2
    soft = (first.soft_labels > 0) & (first.soft_labels < 1)
    assert soft.any()
    torch.testing.assert_close(later.soft_labels[soft], first.soft_labels[soft] * (0.381818181818 / 0.6))
    assert not any("soft" in k for k in dense.state_dict())
    linear = _small(SCHEDULE_MODE="linear")
    linear.set_train_progress(50, 101)
    assert linear.soft_t == pytest.approx(0.4)
    per_epoch = _small(ITERS_PER_EPOCH=10)
    per_epoch.set_train_progress(35, 1200)
    assert per_epoch.soft_t == pytest.approx(0.6 - 3 * 0.4 / 11)


@pytest.mark.parametrize(
    "key, value, match",
    [("SCHEDULE_MODE", "cosine", "MODEL.O2F.SCHEDULE_MODE"), ("OBJ_CHANNELS", 48, "MODEL.O2F.OBJ_CHANNELS"),
     ("TOPK", 0, "MODEL.O2F.TOPK"), ("SCHEDULE_EPOCHS", 0, "MODEL.O2F.SCHEDULE_EPOCHS"),
     ("POTO_ALPHA", 1.5, "MODEL.O2F.POTO_ALPHA"), ("CENTER_SAMPLING_RADIUS", -1.0, "MODEL.O2F.CENTER_SAMPLING_RADIUS")],
)
def test_bad_config_values_name_their_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        _small(**{key: value})


def test_channels_other_than_the_fpn_width_are_reported(caplog):
    with caplog.at_level("WARNING"):
        _head(32, NUM_CONVS=1, OBJ_CHANNELS=32)
    assert "MODEL.O2F.CHANNELS = 256 differs from the FPN width 32" in caplog.text


# ----------------------------------------------------------------------------- configs (o2f §7, §9.2; spec §2.1)
def _config(name):
    return _cfg_from(f"configs/o2f/{name}.yaml")


def test_r50_config_builds_the_original_detector():
    cfg = _config("o2f_R_50_FPN_1x")
    with torch.device("meta"):
        model = build_detection_model(cfg)
    body = model.backbone.body
    assert len(model.state_dict()) == 336
    assert body.layer2[0].conv1.stride == (1, 1) and body.layer2[0].conv2.stride == (2, 2)  # pytorch style
    bns = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert bns and all(m.eps == 1e-5 for m in bns)
    assert body.layer3[0].bn1.weight.requires_grad and not body.stem.bn1.weight.requires_grad
    assert model.backbone.fpn.top_blocks.p6.in_channels == 256  # P6 from P5
    post = model.rpn.postprocessor
    assert post.nms_thresh is None and post.box_offset == 0 and post.detections_per_img == 100
    assert post.threshold_rank and not post.rank_locations and post.pre_nms_top_n == 1000
    assert cfg.MODEL.WEIGHT == "torchvision://resnet50" and not cfg.INPUT.TO_BGR255
    assert list(cfg.INPUT.PIXEL_MEAN) == [0.485, 0.456, 0.406] and list(cfg.INPUT.PIXEL_STD) == [0.229, 0.224, 0.225]
    s = cfg.SOLVER
    assert (tuple(s.STEPS), s.MAX_ITER, s.IMS_PER_BATCH, s.BASE_LR) == ((58640, 80630), 87960, 16, 0.01)
    assert (s.WARMUP_METHOD, s.WARMUP_FACTOR, s.WARMUP_ITERS) == ("linear", 0.001, 1000)
    # T steps once per 7,330-iteration epoch.
    rpn = build_dense_head(cfg, 32)
    rpn.set_train_progress(7329, s.MAX_ITER)
    assert rpn.soft_t == 0.6
    rpn.set_train_progress(7330, s.MAX_ITER)
    assert rpn.soft_t == pytest.approx(0.563636, abs=1e-6)


def test_r50_param_groups_follow_mmcv_rules():
    cfg = _config("o2f_R_50_FPN_1x")
    dense = build_dense_head(cfg, 32)
    optimizer = make_optimizer(cfg, dense)
    names = [n for n, p in dense.named_parameters() if p.requires_grad]
    groups = {n: (g["lr"], g["weight_decay"]) for n, g in zip(names, optimizer.param_groups)}
    assert isinstance(optimizer, torch.optim.SGD)
    assert groups["head.centerness_tower.1.weight"] == (0.01, 0.0)  # GN: no decay
    assert groups["head.cls_tower.1.bias"] == (0.01, 0.0)
    assert groups["head.cls_logits.bias"] == (0.01, 1e-4)  # biases: lr x 1, decayed
    assert groups["head.centerness.weight"] == (0.01, 1e-4)
    assert groups["head.scales.0.scale"] == (0.01, 1e-4)


def test_ms_3x_and_r101_configs():
    cfg = _config("o2f_R_50_FPN_ms_3x")
    assert tuple(cfg.INPUT.MIN_SIZE_RANGE_TRAIN) == (640, 800)
    schedule = (tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER, cfg.MODEL.O2F.SCHEDULE_EPOCHS)
    assert schedule == ((175920, 241890), 263880, 36)
    rpn = build_dense_head(cfg, 32)
    rpn.set_train_progress(18 * 7330, cfg.SOLVER.MAX_ITER)
    assert rpn.soft_t == pytest.approx(0.394286, abs=1e-6)
    cfg = _config("o2f_R_101_FPN_1x")
    assert cfg.MODEL.WEIGHT == "torchvision://resnet101"
    with torch.device("meta"):
        assert len(build_detection_model(cfg).state_dict()) == 591


def test_crowdhuman_config():
    cfg = _config("o2f_R_50_FPN_crowdhuman")
    c = cfg.MODEL.O2F
    assert (c.NUM_CLASSES, c.TOPK, c.PRE_NMS_TOP_N, c.SCHEDULE_EPOCHS, c.USE_NMS) == (2, 4, 5000, 50, False)
    assert cfg.TEST.DETECTIONS_PER_IMG == 500
    sizes = (tuple(cfg.INPUT.MIN_SIZE_RANGE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TEST)
    assert sizes == ((480, 960), 1400, 1400)
    assert (tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER) == ((40 * 938,), 50 * 938)
    dense = build_dense_head(cfg, 32)
    assert dense.postprocessor.detections_per_img == 500 and dense.head.cls_logits.out_channels == 1
    optimizer = make_optimizer(cfg, dense)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    assert {(g["lr"], g["weight_decay"]) for g in optimizer.param_groups} == {(4e-5, 1e-4)}  # every parameter


def test_toy_config_keeps_the_atss_toy_schedule_and_backbone():
    toy, atss = _cfg_from("configs/quickstart/o2f_toy.yaml"), _cfg_from("configs/quickstart/atss_toy.yaml")
    assert toy.SOLVER == atss.SOLVER and toy.INPUT == atss.INPUT
    assert toy.MODEL.BACKBONE == atss.MODEL.BACKBONE and toy.MODEL.RESNETS == atss.MODEL.RESNETS
    assert toy.DATASETS == atss.DATASETS and not toy.MODEL.O2F.USE_NMS
