"""The DW DenseHead built from the config: the refinement sampler (dw.md §11.9), init and
forward invariants (§11.10), inference (§11.11), training flows with zero and one gt and
under bfloat16 autocast, and the shipped configs (§8, §9.2)."""
import math

import pytest
import torch
import torch.nn.functional as F

from atss_core.layers.misc import DFConv2d
from atss_core.modeling.dense_heads import DENSE_HEADS, build_dense_head
from atss_core.modeling.dense_heads.dw import refine_distances
from atss_core.structures.image_list import ImageList
from tests.modeling.dense_heads.conftest import config_from

R50 = "configs/dw/dw_R_50_FPN_1x.yaml"
CONFIGS = {
    "dw_R_50_FPN_1x": (False, True, 1, "resnet50"),
    "dw_R_50_FPN_worefine_1x": (False, False, 1, "resnet50"),
    "dw_R_50_FPN_ms_2x": (False, True, 2, "resnet50"),
    "dw_dcn_R_50_FPN_ms_2x": (True, True, 2, "resnet50"),
    "dw_R_101_FPN_worefine_ms_2x": (False, False, 2, "resnet101"),
}
F64 = torch.float64


def _cfg_from(path=R50, **dw):
    return config_from(path, "DW", **dw)


def _head(channels=256, **dw):
    torch.manual_seed(0)
    return build_dense_head(_cfg_from(**dw), channels)


def _small(**dw):
    return _head(32, **{"NUM_CLASSES": 6, "NUM_CONVS": 1, **dw})


# ----------------------------------------------------------------------------- §11.9 refinement sampler
def _refine(l, t, r, b, offsets=None):
    maps = [torch.as_tensor(v, dtype=F64).expand(3, 3) for v in (l, t, r, b)]
    d = torch.stack(maps)[None]
    o = torch.zeros(1, 8, 3, 3, dtype=F64) if offsets is None else offsets
    return refine_distances(d, o, 8)[0]


def test_constant_distances_of_one_cell():
    l, t, r, b = _refine(8.0, 8.0, 8.0, 8.0)
    assert l.tolist() == [[4, 16, 16]] * 3
    assert t.tolist() == [[4, 4, 4], [16, 16, 16], [16, 16, 16]]
    assert r.tolist() == [[16, 16, 0]] * 3
    assert b.tolist() == [[16, 16, 16], [16, 16, 16], [0, 0, 0]]


def test_constant_distances_of_half_a_cell():
    l, _, r, _ = _refine(4.0, 4.0, 4.0, 4.0)
    assert l.tolist() == [[4, 8, 8]] * 3
    assert r.tolist() == [[8, 8, 0]] * 3  # right column: 0.5 * 24 + 0.5 * 0 = 12 -> ReLU(12 - 20)


def test_non_uniform_left_distances_with_a_learnt_offset():
    offsets = torch.zeros(1, 8, 3, 3, dtype=F64)
    offsets[0, 0, 1, 1], offsets[0, 1, 1, 1] = 0.25, 0.5
    l = _refine(torch.tensor([[2.0, 4, 6], [8, 10, 12], [14, 16, 18]], dtype=F64), 8.0, 8.0, 8.0, offsets)[0]
    assert l.tolist() == [[2.5, 7, 10.5], [4, 16, 21], [4, 12, 27.5]]


def _grid_sample_refine(d, o, stride):
    """Independent path: each coordinate map sampled with F.grid_sample (align_corners=True,
    zeros) at (row, col) = cell + offset + the side's distance in cells (dw.md §2.4)."""
    n, _, h, w = d.shape
    px = ((torch.arange(w, dtype=d.dtype) + 0.5) * stride).view(1, 1, w).expand(n, h, w)
    py = ((torch.arange(h, dtype=d.dtype) + 0.5) * stride).view(1, h, 1).expand(n, h, w)
    l, t, r, b = d.unbind(1)
    coords = [px - l, py - t, px + r, py + b]
    rows = torch.arange(h, dtype=d.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=d.dtype).view(1, 1, w)
    shifts = [(0, -l / stride), (-t / stride, 0), (0, r / stride), (b / stride, 0)]
    sampled = []
    for g, (coord, (dr, dc)) in enumerate(zip(coords, shifts)):
        y = rows + o[:, 2 * g] + dr
        x = cols + o[:, 2 * g + 1] + dc
        grid = torch.stack((2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1), dim=-1)
        sample = F.grid_sample(coord[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled.append(sample[:, 0])
    x1, y1, x2, y2 = sampled
    return torch.stack((px - x1, py - y1, x2 - px, y2 - py), 1).relu()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (F64, 1e-10)])
def test_sampler_agrees_with_grid_sample_and_has_gradients(dtype, tol):
    g = torch.Generator().manual_seed(0)
    d = (torch.rand(2, 4, 5, 7, generator=g, dtype=F64) * 40).to(dtype).requires_grad_()
    o = torch.randn(2, 8, 5, 7, generator=g, dtype=F64).to(dtype).requires_grad_()
    ours = refine_distances(d, o, 8)
    ref = _grid_sample_refine(d.detach(), o.detach(), 8)
    assert ours.dtype == dtype
    assert (ours - ref).abs().max().item() <= tol
    ours.sum().backward()
    assert d.grad.abs().sum() > 0 and o.grad.abs().sum() > 0


def test_sampler_runs_in_float32_under_autocast():
    d, o = torch.rand(1, 4, 3, 3) * 20, torch.randn(1, 8, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = refine_distances(d, o.bfloat16(), 8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, refine_distances(d, o.bfloat16().float(), 8))


# ----------------------------------------------------------------------------- structure (checkpoints.md §1.5, §2.4)
@pytest.mark.parametrize(
    "dw,keys,params",
    [
        ({"REG_REFINE": False}, 43, 4920666),
        ({"REG_REFINE": True}, 45, 4939106),
        ({"REG_REFINE": True, "USE_DCN_IN_TOWER": True}, 49, 5063576),
    ],
)
def test_head_keys_and_parameter_counts(dw, keys, params):
    assert "DW_ON" in DENSE_HEADS
    with torch.device("meta"):
        head = build_dense_head(_cfg_from(**dw), 256)
    sd = head.state_dict()
    assert len(sd) == keys and all(k.startswith("head.") for k in sd)  # no anchor buffers, no centre prior
    assert sum(p.numel() for p in head.parameters()) == params
    assert tuple(sd["head.centerness.weight"].shape) == (1, 256, 3, 3)
    assert ("head.reg_offset.weight" in sd) == dw["REG_REFINE"]
    assert "head.cls_tower.0.bias" in sd


# ----------------------------------------------------------------------------- §11.10 init and forward invariants
def test_initialisation():
    head = _head(REG_REFINE=True, USE_DCN_IN_TOWER=True).head
    assert head.cls_logits.bias.detach().tolist() == pytest.approx([-math.log(49)] * 80, abs=1e-6)
    assert -math.log(49) == pytest.approx(-3.891820, abs=1e-6)
    assert torch.sigmoid(head.cls_logits.bias[0]).item() == pytest.approx(0.02)
    assert head.bbox_pred.bias.tolist() == [4.0] * 4
    assert not head.centerness.bias.any() and not head.reg_offset.bias.any() and not head.cls_tower[0].bias.any()
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    convs = (head.cls_tower[0], head.bbox_tower[3], head.cls_logits, head.bbox_pred, head.centerness, head.reg_offset)
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.1)
    dcn = [m for m in head.modules() if isinstance(m, DFConv2d)]
    assert len(dcn) == 2 and all(not m.offset.weight.any() and not m.offset.bias.any() for m in dcn)
    assert head.cls_tower[9].conv.weight.abs().max() <= 1 / math.sqrt(256 * 9)  # mmcv's DCNv2 uniform bound


def test_init_std_key():
    head = _small(INIT_STD=0.1, REG_REFINE=True).head
    assert head.cls_tower[0].weight.std().item() == pytest.approx(0.1, rel=0.1)
    assert head.reg_offset.weight.std().item() == pytest.approx(0.1, rel=0.1)


def _features(n=2, channels=32, seed=0, sizes=((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, h, w, generator=g) for h, w in sizes]


def test_forward_shapes_units_and_signs():
    plain = _small(REG_REFINE=False).head
    feats = _features()
    cls, dist, obj = plain(feats)
    for level, (c, d, o, f) in enumerate(zip(cls, dist, obj, feats)):
        h, w = f.shape[-2:]
        assert c.shape == (2, 5, h, w) and d.shape == (2, 4, h, w) and o.shape == (2, 1, h, w)
        stride = 8 * 2**level
        raw = plain.bbox_pred(plain.bbox_tower(f))
        torch.testing.assert_close(d, stride * torch.relu(plain.scales[level].scale * raw))
        assert d.detach().div(stride).sub(4).abs().max() < 0.5  # bias 4, small weights: ~4 strides
    refining = _small(REG_REFINE=True).head
    assert all((d >= 0).all() for d in refining(feats)[1])
    with torch.no_grad():
        refining.reg_offset.weight.zero_()
    # offsets 0 and distances ~4 cells: interior left sides read the box 4 cells to the left -> ~8 cells
    assert refining(feats)[1][0][:, 0, :, 4:].div(8).sub(8).abs().max() < 1.0


def test_train_and_eval_outputs_are_the_same():
    dense = _small()
    feats = _features()
    for a, b in zip(dense.train().head(feats)[1], dense.eval().head(feats)[1]):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- §11.11 inference through the head
class _FixedOutputs(torch.nn.Module):
    def __init__(self, cls, dist, obj):
        super().__init__()
        self.outputs = ([cls], [dist], [obj])

    def forward(self, features):
        return self.outputs


def _logit(p):
    return math.log(p / (1 - p))


def test_inference_thresholds_the_joint_score():
    dense = _small(NUM_CLASSES=3, FPN_STRIDES=[8], PRE_NMS_TOP_N=1000).eval()
    cls = torch.tensor([[_logit(0.2), _logit(0.9)], [_logit(0.06), _logit(0.01)]]).t().reshape(1, 2, 1, 2)
    obj = torch.tensor([_logit(0.2), _logit(0.9)]).reshape(1, 1, 1, 2)
    dist = torch.full((1, 4, 1, 2), 4.0)
    dense.head = _FixedOutputs(cls, dist, obj)
    (det,), losses = dense(ImageList(torch.zeros(1, 3, 8, 16), [(8, 16)]), [torch.zeros(1, 1, 1, 2)])
    assert losses == {} and det.box_offset == 0
    assert det.get_field("labels").tolist() == [2, 1]
    assert det.get_field("scores").tolist() == pytest.approx([0.18, 0.054])
    assert det.bbox.tolist() == [[0, 0, 8, 8], [8, 0, 16, 8]]


def test_inference_top_k_and_nms_use_the_joint_score():
    dense = _small(NUM_CLASSES=2, FPN_STRIDES=[8], PRE_NMS_TOP_N=2, NMS_TH=0.6).eval()
    # three points, one class: joint 0.72, 0.45, 0.3 (cls 0.9, 0.9, 0.6 x obj 0.8, 0.5, 0.5)
    cls = torch.tensor([_logit(0.9), _logit(0.9), _logit(0.6)]).reshape(1, 1, 1, 3)
    obj = torch.tensor([_logit(0.8), _logit(0.5), _logit(0.5)]).reshape(1, 1, 1, 3)
    dist = torch.tensor([[4.0, 4, 4, 4], [12, 4, 4, 4], [4, 4, 4, 4]]).t().reshape(1, 4, 1, 3)
    dense.head = _FixedOutputs(cls, dist, obj)
    (det,), _ = dense(ImageList(torch.zeros(1, 3, 8, 24), [(8, 24)]), [torch.zeros(1, 1, 1, 3)])
    # point 1's box (0, 0, 16, 8) overlaps point 0's (0, 0, 8, 8) with IoU 0.5 <= 0.6: kept;
    # point 2 is beyond the top 2 of the level although above the threshold
    assert det.get_field("scores").tolist() == pytest.approx([0.72, 0.45])


# ----------------------------------------------------------------------------- training flows (spec C18, C23)
LOSS_KEYS = {"loss_cls_pos", "loss_loc", "loss_cls_neg"}


@pytest.mark.parametrize("refine", [True, False])
def test_one_gt_image_next_to_a_zero_gt_image(refine, feature_batch, boxes_target):
    dense = _small(REG_REFINE=refine).train()
    images, feats = feature_batch()
    detections, losses = dense(images, feats, [boxes_target([[10, 8, 50, 40]], [2]), boxes_target([], [])])
    assert detections is None and set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dtype == torch.float32 and v.dim() == 0 for v in losses.values())
    assert losses["loss_loc"] > 0 and losses["loss_cls_pos"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dense.parameters())
    assert dense.head.bbox_pred.weight.grad.abs().sum() > 0


def test_batch_of_zero_gt_images_keeps_the_graph(feature_batch, boxes_target):
    dense = _small().train()
    losses = dense(*feature_batch(), [boxes_target([], []), boxes_target([], [])])[1]
    assert losses["loss_cls_pos"].item() == 0 and losses["loss_loc"].item() == 0 and losses["loss_cls_neg"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in dense.parameters())
    assert dense.head.bbox_pred.weight.grad.abs().sum() == 0 and dense.head.reg_offset.weight.grad.abs().sum() == 0


def test_bfloat16_autocast_keeps_boxes_and_losses_in_float32(feature_batch, boxes_target):
    dense = _small()
    images, feats = feature_batch()
    targets = [boxes_target([[12, 6, 44, 50], [58, 18, 92, 62]], [3, 5]), boxes_target([[4, 6, 28, 34]], [1])]
    reference = dense.train()(images, feats, targets)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distances = dense.head(feats)[1]
        losses = dense(images, feats, targets)[1]
        detections = dense.eval()(images, feats)[0]
    assert all(d.dtype == torch.float32 for d in distances)
    for key, value in losses.items():
        assert value.dtype == torch.float32 and value.item() == pytest.approx(reference[key].item(), rel=0.1), key
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in dense.parameters())
    assert all(torch.isfinite(d.bbox).all() and d.get_field("scores").dtype == torch.float32 for d in detections)


def test_eval_detections_report_the_joint_score(feature_batch):
    dense = _small(INFERENCE_TH=0.0).eval()
    images, feats = feature_batch()
    with torch.no_grad():
        detections, losses = dense(images, feats)
        cls, _, obj = dense.head(feats)
    assert losses == {} and len(detections) == 2
    for i, (det, (h, w)) in enumerate(zip(detections, images.image_sizes)):
        joint = torch.cat([(c[i].sigmoid() * o[i].sigmoid()).flatten() for c, o in zip(cls, obj)])
        # NMS always keeps the best (point, class) pair, and its score is cls x objectness itself
        assert det.get_field("scores").max().item() == pytest.approx(joint.max().item(), rel=1e-6)
        assert det.size == (w, h) and 0 < len(det) <= 100 and det.get_field("labels").max() <= 5
        assert (det.bbox >= 0).all() and (det.bbox[:, 0::2] <= w).all() and (det.bbox[:, 1::2] <= h).all()


def test_bad_keys_fail_with_the_key_name():
    with pytest.raises(ValueError, match="NEG_IOU_THRESH"):
        _small(NEG_IOU_THRESH=1.0)
    with pytest.raises(ValueError, match="PRIOR_SIGMA"):
        _small(PRIOR_SIGMA=0.0)
    with pytest.raises(ValueError, match="FPN_STRIDES"):
        _small(FPN_STRIDES=[8, 16]).head(_features())


# ----------------------------------------------------------------------------- configs (§8, §9.2)
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs(name):
    dcn, refine, schedule, weights = CONFIGS[name]
    c = _cfg_from(f"configs/dw/{name}.yaml")
    assert c.MODEL.DW_ON and c.MODEL.WEIGHT == f"torchvision://{weights}"
    assert c.MODEL.DW.REG_REFINE == refine and c.MODEL.DW.USE_DCN_IN_TOWER == dcn
    assert c.MODEL.RESNETS.STAGE_WITH_DCN == ((False, True, True, True) if dcn else (False,) * 4)
    assert c.MODEL.RESNETS.WITH_MODULATED_DCN == dcn and c.MODEL.RESNETS.DCN_ZERO_INIT_OFFSET == dcn
    r = c.MODEL.RESNETS
    assert (r.STRIDE_IN_1X1, r.BN_AFFINE_TRAINABLE, r.BN_EPS) == (False, True, 1e-5)
    assert c.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 2 and not c.MODEL.RETINANET.USE_C5
    assert not c.INPUT.TO_BGR255 and c.INPUT.PIXEL_MEAN == [0.485, 0.456, 0.406]
    assert c.INPUT.PIXEL_STD == [0.229, 0.224, 0.225]
    assert tuple(c.INPUT.MIN_SIZE_RANGE_TRAIN) == ((480, 960) if schedule == 2 else (-1, -1))
    s = c.SOLVER
    assert (s.BASE_LR, s.IMS_PER_BATCH, s.MOMENTUM, s.WEIGHT_DECAY) == (0.01, 16, 0.9, 1e-4)
    assert (s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS, s.WEIGHT_DECAY_NORM, s.CLIP_GRAD_NORM) == (1, 1e-4, 0, 0)
    assert (s.WARMUP_METHOD, s.WARMUP_FACTOR, s.WARMUP_ITERS) == ("linear", 0.001, 1000)
    epoch = 7330  # 117,266 images / 16 (dw.md §9.2)
    epochs, steps = (12, (8, 11)) if schedule == 1 else (24, (16, 22))
    assert s.MAX_ITER == epochs * epoch and tuple(s.STEPS) == tuple(e * epoch for e in steps)
    assert c.TEST.IMS_PER_BATCH == 8 and c.TEST.DETECTIONS_PER_IMG == 100  # 1 per process on 8 GPUs
    assert (c.MODEL.DW.INFERENCE_TH, c.MODEL.DW.NMS_TH, c.MODEL.DW.PRE_NMS_TOP_N) == (0.05, 0.6, 1000)


def test_toy_config_keeps_the_atss_toy_schedule_and_backbone():
    toy, atss = _cfg_from("configs/quickstart/dw_toy.yaml"), _cfg_from("configs/quickstart/atss_toy.yaml")
    assert toy.MODEL.DW_ON and toy.MODEL.DW.NUM_CLASSES == 4
    assert toy.MODEL.BACKBONE == atss.MODEL.BACKBONE and toy.MODEL.RESNETS == atss.MODEL.RESNETS
    for key in ("MAX_ITER", "STEPS", "IMS_PER_BATCH"):
        assert toy.SOLVER[key] == atss.SOLVER[key]
    assert toy.INPUT == atss.INPUT
