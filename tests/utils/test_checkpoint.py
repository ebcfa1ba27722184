import contextlib
import os
import pickle
import re
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from atss_core.config import cfg as base_cfg
from atss_core.layers import FrozenBatchNorm2d
from atss_core.modeling.backbone import build_backbone, build_resnet
from atss_core.utils import checkpoint as checkpoint_module
from atss_core.utils import model_zoo
from atss_core.utils.c2_model_loading import load_c2_format, rename_c2_weights
from atss_core.utils.checkpoint import Checkpointer, DetectronCheckpointer
from atss_core.utils.model_serialization import align_and_update_state_dicts, convert_imagenet_backbone, load_state_dict


class TinyDetector(nn.Module):
    """Native key layout (backbone.body.*, rpn.head.*) at toy size."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Module()
        self.backbone.body = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
        self.rpn = nn.Module()
        self.rpn.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.backbone.body[1].running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.rpn.head(self.backbone.body(x))


class Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def solver(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4])


def train_step(model, opt, sched):
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    sched.step()
    opt.zero_grad()


# --------------------------------------------------------------------- save / load
def test_round_trip_with_solver_state(tmp_path):
    model = TinyDetector(0)
    opt, sched = solver(model)
    for _ in range(3):
        train_step(model, opt, sched)
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000003", iteration=3, categories=["cat", "dog"])

    path = os.path.join(str(tmp_path), "model_0000003.pth")
    assert (tmp_path / "last_checkpoint").read_text() == path
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    data = torch.load(path, weights_only=True)
    assert sorted(data) == ["categories", "iteration", "model", "optimizer", "scheduler"]
    assert len(data["optimizer"]["state"]) == 4  # momentum of every trained tensor

    fresh = TinyDetector(1)
    fopt, fsched = solver(fresh)
    extra = Checkpointer(fresh, fopt, fsched, save_dir=str(tmp_path)).load()
    assert extra == {"iteration": 3, "categories": ["cat", "dog"]}
    assert_same_state(fresh, model)
    assert fsched.last_epoch == 3 and fsched.get_last_lr() == sched.get_last_lr()
    for p, q in zip(fopt.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert torch.equal(p["momentum_buffer"], q["momentum_buffer"])


def test_ddp_style_prefix_and_wrapped_model(tmp_path):
    model = TinyDetector(0)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "ddp.pth")
    fresh = TinyDetector(1)
    Checkpointer(nn.DataParallel(fresh)).load(str(tmp_path / "ddp.pth"))
    assert_same_state(fresh, model)


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = TinyDetector(0)
    ckpt = Checkpointer(model, save_dir=str(tmp_path), save_to_disk=True)
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with torch.no_grad():
        model.rpn.head.weight.add_(1)
    for name in ("model_final", "model_0000002"):
        with pytest.raises(OSError, match="disk full"):
            ckpt.save(name, iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp files
    assert (tmp_path / "last_checkpoint").read_text().endswith("model_final.pth")


def test_failed_tag_keeps_last_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(TinyDetector(0), save_dir=str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001")
    real_replace = os.replace

    def replace(src, dst):
        if dst.endswith("last_checkpoint"):
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        ckpt.save("model_0000002")
    assert (tmp_path / "last_checkpoint").read_text().endswith("model_0000001.pth")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth", "model_0000002.pth"]


def test_save_only_on_disk_rank_and_with_dir(tmp_path):
    Checkpointer(TinyDetector(0), save_dir=str(tmp_path), save_to_disk=False).save("x")
    Checkpointer(TinyDetector(0), save_dir="", save_to_disk=True).save("x")
    assert os.listdir(tmp_path) == []


def test_use_latest_semantics(tmp_path):
    out, other = tmp_path / "out", tmp_path / "weights.pth"
    latest, explicit = TinyDetector(0), TinyDetector(1)
    Checkpointer(latest, save_dir=str(out), save_to_disk=True).save("model_0000010", iteration=10)
    torch.save({"model": explicit.state_dict()}, other)

    model = TinyDetector(2)
    assert Checkpointer(model, save_dir=str(out)).load(str(other)) == {"iteration": 10}
    assert_same_state(model, latest)  # last_checkpoint wins over MODEL.WEIGHT
    assert Checkpointer(model, save_dir=str(out)).load(str(other), use_latest=False) == {}
    assert_same_state(model, explicit)

    untouched = TinyDetector(3)
    before = {k: v.clone() for k, v in untouched.state_dict().items()}
    assert Checkpointer(untouched, save_dir=str(tmp_path / "empty")).load(None) == {}
    assert all(torch.equal(before[k], v) for k, v in untouched.state_dict().items())


def test_moved_output_dir_still_resumes(tmp_path):
    model = TinyDetector(0)
    Checkpointer(model, save_dir=str(tmp_path / "a"), save_to_disk=True).save("model_final")
    os.rename(tmp_path / "a", tmp_path / "b")
    fresh = TinyDetector(1)
    Checkpointer(fresh, save_dir=str(tmp_path / "b")).load()
    assert_same_state(fresh, model)


# ---------------------------------------------------------------- file containers
def test_containers_load_identically(tmp_path):
    # checkpoints.md §6 C8
    src = TinyDetector(0)
    sd = src.state_dict()
    variants = {
        "bare": (sd, {}),
        "model": ({"model": sd, "iteration": 5}, {"iteration": 5}),
        "state_dict": ({"state_dict": sd}, {}),
        "mmcv": ({"meta": {"epoch": 12}, "state_dict": sd, "optimizer": {"state": {}}}, {}),
        "module": ({"module." + k: v for k, v in sd.items()}, {}),
    }
    for name, (data, expected_extra) in variants.items():
        torch.save(data, tmp_path / f"{name}.pth")
        model = TinyDetector(1)
        assert Checkpointer(model).load(str(tmp_path / f"{name}.pth")) == expected_extra, name
        assert_same_state(model, src)


def test_nothing_matched_raises(tmp_path):
    torch.save({"foo": torch.zeros(3)}, tmp_path / "foo.pth")
    with pytest.raises(RuntimeError, match="no tensor of .*foo.pth matches the model"):
        Checkpointer(TinyDetector(0)).load(str(tmp_path / "foo.pth"))


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    sd = TinyDetector(0).state_dict()
    sd["rpn.head.weight"] = torch.zeros(3, 4, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"rpn\.head\.weight \(2, 4, 1, 1\) <- rpn\.head\.weight \(3, 4, 1, 1\)"):
        Checkpointer(TinyDetector(1)).load(str(tmp_path / "bad.pth"))


class WiderHead(TinyDetector):
    """TinyDetector with 5 instead of 2 head outputs (another class count)."""

    def __init__(self, seed):
        super().__init__(seed)
        self.rpn.head = nn.Conv2d(4, 5, 1)


def test_fine_tuning_skips_other_shapes_and_reports(tmp_path, caplog):
    # checkpoints and MODEL.WEIGHT of a 2-output model, fine-tuned to 5 outputs
    src = TinyDetector(0)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    sd["module.rpn.extra.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "released.pth")
    model = WiderHead(1)
    head_before = model.rpn.head.weight.clone()
    with caplog.at_level("INFO"):
        Checkpointer(model).load_weights(str(tmp_path / "released.pth"))
    assert torch.equal(model.backbone.body[0].weight, src.backbone.body[0].weight)
    assert torch.equal(model.rpn.head.weight, head_before)
    log = caplog.text
    assert "skipped 2 checkpoint tensors" in log
    assert "rpn.head.weight (5, 4, 1, 1) <- rpn.head.weight (2, 4, 1, 1)" in log
    assert "missing: model tensors left at their initial value: rpn.head (2)" in log
    assert "unexpected: checkpoint tensors not used: rpn (3)" in log  # head weight, bias and rpn.extra
    # evaluation-style loading and resuming never skip
    with pytest.raises(ValueError, match="do not fit"):
        Checkpointer(WiderHead(1)).load(str(tmp_path / "released.pth"), use_latest=False)


def test_weights_file_solver_state_is_not_resumed(tmp_path):
    # A released ATSS .pth: DDP names, optimizer, scheduler, iteration 90000.
    src = TinyDetector(0)
    opt, sched = solver(src)
    for _ in range(3):
        train_step(src, opt, sched)
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "iteration": 90000}, tmp_path / "atss_released.pth")
    model = TinyDetector(1)
    fopt, fsched = solver(model)
    extra = Checkpointer(model, fopt, fsched).load_weights(str(tmp_path / "atss_released.pth"))
    assert extra == {"iteration": 90000}  # reported, but train_net starts at 0 when initialising
    assert_same_state(model, src)
    assert fopt.state_dict()["state"] == {} and fsched.last_epoch == 0


def test_resume_restores_the_amp_scaler(tmp_path):
    model = TinyDetector(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    opt, _ = solver(model)
    scaler.scale(model(torch.randn(1, 3, 5, 5)).sum()).backward()
    scaler.step(opt)
    scaler.update()  # finite grads, growth interval 1: 1024 -> 2048
    Checkpointer(model, opt, scaler=scaler, save_dir=str(tmp_path), save_to_disk=True).save("model_0000001")
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["scaler"]["scale"] == 2048.0

    fresh = torch.amp.GradScaler("cpu", init_scale=1.0)
    fmodel = TinyDetector(1)
    Checkpointer(fmodel, solver(fmodel)[0], scaler=fresh, save_dir=str(tmp_path)).resume()
    assert fresh.get_scale() == 2048.0


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Checkpointer(TinyDetector(0), save_dir=str(tmp_path)).resume()


def test_mmdet_detector_is_rejected(tmp_path):
    sd = {"backbone.conv1.weight": torch.zeros(1), "neck.lateral_convs.0.conv.weight": torch.zeros(1),
          "bbox_head.conv_cls.weight": torch.zeros(1)}
    torch.save({"state_dict": sd}, tmp_path / "dw.pth")
    with pytest.raises(ValueError, match="mmdetection"):
        Checkpointer(TinyDetector(0)).load(str(tmp_path / "dw.pth"))


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"model": TinyDetector(0).state_dict(), "cfg": TinyDetector}, tmp_path / "old.pth")
    with pytest.raises(RuntimeError, match="weights_only"):
        Checkpointer(TinyDetector(1)).load(str(tmp_path / "old.pth"))


# ------------------------------------------------------------- ImageNet backbones
def make_cfg(*opts):
    cfg = base_cfg.clone()
    cfg.merge_from_file("configs/atss/atss_R_50_FPN_1x.yaml")
    cfg.merge_from_list(list(opts))
    return cfg


def r18_cfg(*opts):
    return make_cfg(
        "MODEL.BACKBONE.CONV_BODY", "R-18-FPN-RETINANET",
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.STRIDE_IN_1X1", False,
        *opts,
    )


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 1e-4)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.3 + 0.2)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
    return model.eval()


@contextlib.contextmanager
def float64_default():
    # Building in float64 is cheaper than building in float32 and converting.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def torchvision_stages(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    outs = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        x = layer(x)
        outs.append(x)
    return outs


def rel_errors(ours, ref):
    return [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, ref)]


def test_torchvision_resnet50_functional_equivalence():
    # checkpoints.md §6 C5 (float64, eval), on a 1x3x64x48 input instead of
    # 2x3x128x96 to keep the suite fast on 2 CPU cores.
    torch.manual_seed(0)
    with float64_default():
        tv = randomize_bn(torchvision.models.resnet50())
    x = torch.randn(1, 3, 64, 48, dtype=torch.float64)
    src = tv.state_dict()

    def run(body, eps_fold):
        report = load_state_dict(body, convert_imagenet_backbone(src, (False,) * 4, eps_fold))
        assert report.unmatched_model == []
        with torch.no_grad():
            return body(x)

    with float64_default():
        pytorch_style = build_resnet(make_cfg("MODEL.RESNETS.STRIDE_IN_1X1", False), (3, 4, 6, 3))
        caffe_style = build_resnet(make_cfg("MODEL.RESNETS.STRIDE_IN_1X1", True), (3, 4, 6, 3))
    with torch.no_grad():
        ref = torchvision_stages(tv, x)
    assert [tuple(r.shape) for r in ref] == [(1, 256, 16, 12), (1, 512, 8, 6), (1, 1024, 4, 3), (1, 2048, 2, 2)]
    ours = run(pytorch_style, 1e-5)
    assert max(rel_errors(ours, ref)) <= 1e-10
    assert rel_errors(run(pytorch_style, 0.0), ref)[-1] > 1e-3  # the eps fold is what makes it exact

    for layer in (tv.layer2, tv.layer3, tv.layer4):  # caffe style: stride on the 1x1
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    with torch.no_grad():
        caffe_ref = torchvision_stages(tv, x)
    assert max(rel_errors(run(caffe_style, 1e-5), caffe_ref)) <= 1e-10
    assert min(rel_errors(ours, caffe_ref)[1:]) > 1e-2


@pytest.mark.parametrize("bn_eps", [0.0, 1e-5])
def test_torchvision_file_into_r18_detector(tmp_path, bn_eps):
    torch.manual_seed(0)
    tv = randomize_bn(torchvision.models.resnet18(), seed=1)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    cfg = r18_cfg("MODEL.RESNETS.BN_EPS", bn_eps)
    model = Detector(build_backbone(cfg))
    fpn_before = model.backbone.fpn.fpn_layer2.weight.clone()
    assert DetectronCheckpointer(cfg, model).load(str(tmp_path / "resnet18.pth"), use_latest=False) == {}
    # float64 forward of the float32 weights: only the float32 rounding of the eps fold remains.
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert max(rel_errors(model.double().backbone.body(x), torchvision_stages(tv.double(), x))) < 1e-6
    assert torch.equal(model.backbone.fpn.fpn_layer2.weight, fpn_before)  # no source: untouched


def test_open_mmlab_caffe_style_file_into_r18_detector(tmp_path):
    # checkpoints.md §3.3: {"state_dict"}, mmdet/torchvision names, a bias on every conv,
    # BN statistics 0/1, no num_batches_tracked, no fc
    torch.manual_seed(0)
    tv = randomize_bn(torchvision.models.resnet18(), seed=2)
    sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
    for k in [k for k in sd if k.endswith("running_mean")]:
        sd[k], sd[k.replace("running_mean", "running_var")] = torch.zeros_like(sd[k]), torch.ones_like(sd[k])
    conv_biases = {k.replace(".weight", ".bias"): torch.full((v.shape[0],), 7.0) for k, v in sd.items() if v.ndim == 4}
    torch.save({"state_dict": {**sd, **conv_biases}}, tmp_path / "resnet18_caffe-0123abcd.pth")
    cfg = r18_cfg()
    model = Detector(build_backbone(cfg))
    DetectronCheckpointer(cfg, model).load_weights(str(tmp_path / "resnet18_caffe-0123abcd.pth"))
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    assert torch.equal(body["stem.bn1.weight"], sd["bn1.weight"])
    # .pth source: its BN ran with eps 1e-5, folded into our eps-0 FrozenBN
    assert torch.allclose(body["layer1.0.bn2.running_var"], torch.full_like(body["layer1.0.bn2.running_var"], 1.00001))
    assert not any(v.eq(7.0).all() for k, v in body.items() if k.endswith("bias"))  # conv biases unused


def test_backbone_depth_mismatch_raises(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    cfg = r18_cfg("MODEL.BACKBONE.CONV_BODY", "R-34-FPN-RETINANET")
    with pytest.raises(RuntimeError, match=r"left \d+ backbone tensors without a value.*layer1\.2"):
        DetectronCheckpointer(cfg, Detector(build_backbone(cfg))).load(str(tmp_path / "resnet18.pth"))


def msra_r50_blobs(seed=0):
    """The 214 blobs of the MSRA R-50 pkl (checkpoints.md §6 C6) -> (blobs, {blob: our body key})."""
    rng = np.random.default_rng(seed)
    blobs, target = {}, {}

    def add(name, shape, key=None):
        blobs[name] = rng.standard_normal(shape).astype(np.float32)
        if key:
            target[name] = key

    def conv_bn(prefix, shape, conv_key, bn_key):
        add(prefix + "_w", shape, conv_key + ".weight")
        add(prefix + "_b", shape[:1])  # conv bias: no counterpart
        add(prefix + "_bn_s", shape[:1], bn_key + ".weight")
        add(prefix + "_bn_b", shape[:1], bn_key + ".bias")

    add("conv1_w", (64, 3, 7, 7), "stem.conv1.weight")
    add("conv1_b", (64,))
    add("res_conv1_bn_s", (64,), "stem.bn1.weight")
    add("res_conv1_bn_b", (64,), "stem.bn1.bias")
    c_in = 64
    for i, (blocks, c_b) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        c_out = 4 * c_b
        for j in range(blocks):
            p, k = f"res{i + 2}_{j}", f"layer{i + 1}.{j}"
            if j == 0:
                conv_bn(p + "_branch1", (c_out, c_in, 1, 1), k + ".downsample.0", k + ".downsample.1")
            conv_bn(p + "_branch2a", (c_b, c_in if j == 0 else c_out, 1, 1), k + ".conv1", k + ".bn1")
            conv_bn(p + "_branch2b", (c_b, c_b, 3, 3), k + ".conv2", k + ".bn2")
            conv_bn(p + "_branch2c", (c_out, c_b, 1, 1), k + ".conv3", k + ".bn3")
        c_in = c_out
    add("fc1000_w", (1000, 2048))
    add("fc1000_b", (1000,))
    return blobs, target


@pytest.fixture(scope="module")
def msra_r50(tmp_path_factory):
    blobs, target = msra_r50_blobs()
    path = tmp_path_factory.mktemp("c2") / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=4))
    return blobs, target, path


def test_c2_msra_r50_counts(msra_r50):
    blobs, target, _ = msra_r50
    assert len(blobs) == 214
    with torch.device("meta"):
        body_sd = build_resnet(make_cfg(), (3, 4, 6, 3)).state_dict()
    model_sd = {"backbone.body." + k: v for k, v in body_sd.items()}
    renamed = rename_c2_weights(blobs)
    report = align_and_update_state_dicts(model_sd, convert_imagenet_backbone(renamed, (False,) * 4))
    assert report.matched == {"backbone.body." + key: key for key in target.values()}
    assert len(report.matched) == 159
    assert len(report.unmatched_model) == 106
    assert all(k.endswith(("running_mean", "running_var")) for k in report.unmatched_model)
    unused = {k for k in renamed if k not in report.matched.values() and "stem." + k not in report.matched.values()}
    assert len(unused) == 55
    conv_biases = {k for k in renamed if re.search(r"(conv\d|downsample\.0)\.bias$", k)}
    assert len(conv_biases) == 53 and unused == conv_biases | {"fc1000.weight", "fc1000.bias"}


@pytest.mark.parametrize("dcn", [False, True])
def test_c2_pkl_through_checkpointer(msra_r50, dcn):
    blobs, target, path = msra_r50
    opts = ["MODEL.RESNETS.STAGE_WITH_DCN", (False, True, True, True), "MODEL.RESNETS.WITH_MODULATED_DCN", True]
    cfg = make_cfg(*(opts if dcn else []))
    model = Detector(build_backbone(cfg))
    offset_before = model.backbone.body.layer2[0].conv2.offset.weight.clone() if dcn else None
    assert DetectronCheckpointer(cfg, model).load(str(path)) == {}
    sd = model.backbone.body.state_dict()
    for blob, key in target.items():
        if dcn and key.endswith("conv2.weight") and not key.startswith("layer1."):
            key = key.replace("conv2.weight", "conv2.conv.weight")
        assert torch.equal(sd[key], torch.from_numpy(blobs[blob])), key
    stats = [v for k, v in sd.items() if k.endswith("running_var")]
    assert len(stats) == 53 and all(torch.equal(v, torch.ones_like(v)) for v in stats)  # no eps fold for C2
    assert all(not v.any() for k, v in sd.items() if k.endswith("running_mean"))
    if dcn:
        assert torch.equal(model.backbone.body.layer2[0].conv2.offset.weight, offset_before)


def test_legacy_python2_era_pickle(tmp_path):
    # Detectron files are protocol-2 pickles naming numpy.core (numpy 1.x), read with latin1.
    blobs = {"conv1_w": np.arange(6, dtype=np.float32).reshape(2, 3), "fc1000_b": np.ones(2, np.float32)}
    data = pickle.dumps({"blobs": blobs}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    (tmp_path / "old.pkl").write_bytes(data)
    loaded = load_c2_format(str(tmp_path / "old.pkl"))["model"]
    assert list(loaded) == ["conv1.weight", "fc1000.bias"]
    assert torch.equal(loaded["conv1.weight"], torch.arange(6.0).view(2, 3))


def test_restricted_unpickler_refuses_code(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"blobs": {"x": os.getcwd}}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        Checkpointer(TinyDetector(0)).load(str(tmp_path / "evil.pkl"))


# ------------------------------------------------------------------- model zoo
@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_MODEL_ZOO", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "th" / "atss_core"


def test_cache_dir_honours_env(cache_home, monkeypatch, tmp_path):
    assert model_zoo.model_cache_dir() == str(cache_home)
    monkeypatch.setenv("TORCH_MODEL_ZOO", str(tmp_path / "zoo"))
    assert model_zoo.model_cache_dir() == str(tmp_path / "zoo")


def test_offline_download_error_names_url_and_path(cache_home, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(RuntimeError) as e:
        model_zoo.cache_url(url)
    assert url in str(e.value) and str(cache_home / "R-50.pkl") in str(e.value)


def test_download_checks_hash_prefix(cache_home, monkeypatch):
    calls = []

    def fake(url, dst, hash_prefix, progress=True):
        calls.append(hash_prefix)
        open(dst, "wb").close()

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    path = model_zoo.cache_url("https://download.pytorch.org/models/resnet50-0676ba61.pth")
    assert path == str(cache_home / "resnet50-0676ba61.pth") and calls == ["0676ba61"]
    model_zoo.cache_url("https://example.org/w/model-abc.pth")  # 3 hex chars: too short to be a hash
    assert calls == ["0676ba61", None]
    model_zoo.cache_url("https://download.pytorch.org/models/resnet50-0676ba61.pth")  # cached: no download
    assert len(calls) == 2


def test_catalog_uri_resolves_to_cached_file(cache_home, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", None)  # any download attempt would fail
    os.makedirs(cache_home)
    (cache_home / "R-50.pkl").write_bytes(b"")
    path = model_zoo.resolve_weight_uri("catalog://ImageNetPretrained/MSRA/R-50", base_cfg.PATHS_CATALOG)
    assert path == str(cache_home / "R-50.pkl")


def test_weight_uri_tables():
    # checkpoints.md §4.2: V1 torchvision weights, never the V2 recipe.
    assert model_zoo.torchvision_url("resnet50") == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert model_zoo.torchvision_url("resnet101").endswith("resnet101-63fe2227.pth")
    assert model_zoo.open_mmlab_url("resnet50_caffe").endswith("/resnet50_caffe-788b5fa3.pth")
    assert model_zoo.open_mmlab_url("detectron2/resnet101_caffe").endswith("/resnet101_msra-6cc46731.pth")
    with pytest.raises(KeyError, match="resnet50_caffe_bgr"):
        model_zoo.open_mmlab_url("resnet50_caffe_bgr")
    with pytest.raises(KeyError, match="no model named"):
        model_zoo.torchvision_url("resnet5")


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        model_zoo.resolve_weight_uri(str(tmp_path / "nope.pth"))
