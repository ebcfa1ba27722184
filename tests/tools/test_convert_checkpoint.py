"""tools/convert_checkpoint.py end to end: an mmdet-named DSLA R-50 checkpoint (our randomly
initialised model exported to mmdet names, checkpoints.md §2.8) converts back to the
same weights, loads into the configured model, and bad input fails without output."""
import os
import subprocess
import sys

import pytest
import torch

from atss_core.config import cfg as _cfg
from atss_core.modeling.detector import build_detection_model
from atss_core.utils.mmdet_convert import export
from tests.utils.mmdet_checkpoints import ROOT, TOOL, load_tool

CONFIG = os.path.join(ROOT, "configs", "dsla", "dsla_R_50_FPN_1x.yaml")
MMDET_CONFIG = "model = dict(backbone=dict(type='ResNet', depth=50, style='caffe'))\n"


def _model():
    cfg = _cfg.clone()
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return build_detection_model(cfg)


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    ours = _model().state_dict()
    # Make frozen-BN statistics non-trivial so that the variance fold is visible.
    for k in ours:
        if k.endswith("running_var"):
            ours[k] = torch.rand(ours[k].shape) + 0.5
    path = tmp_path_factory.mktemp("ckpt") / "dsla_mmdet.pth"
    classes = ["person"] + [f"c{i}" for i in range(78)] + ["toothbrush"]
    torch.save({"meta": {"config": MMDET_CONFIG, "CLASSES": classes}, "state_dict": export(ours, "DSLA"), "optimizer": {}}, path)
    return ours, path


def test_converts_back_to_the_same_weights_and_loads_strictly(source, tmp_path):
    ours, path = source
    out = tmp_path / "converted.pth"
    proc = _run(str(path), str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DSLA detector: 367 keys -> 314" in proc.stdout
    assert "MODEL.RESNETS.STRIDE_IN_1X1 True" in proc.stdout and "MODEL.RETINANET.USE_C5 False" in proc.stdout
    data = torch.load(out, weights_only=True)
    assert data["meta"]["head"] == "DSLA" and data["meta"]["CLASSES"][-1] == "toothbrush"
    assert data["meta"]["cfg_overrides"]["MODEL.DSLA.CONV_BIAS"] is False
    sd = data["model"]
    assert set(sd) == set(ours)
    for k, v in ours.items():
        if k.endswith("running_var"):
            torch.testing.assert_close(sd[k], v, rtol=1e-6, atol=0)
        else:
            assert torch.equal(sd[k], v), k
    model = _model()
    assert not model.load_state_dict(sd, strict=True).missing_keys
    assert [p for p in os.listdir(tmp_path) if p != "converted.pth"] == []


def test_bad_input_fails_and_leaves_the_output_alone(source, tmp_path):
    ours, path = source
    data = torch.load(path, weights_only=True)
    data["state_dict"]["bbox_head.foo.weight"] = torch.zeros(3)
    data["meta"] = {}
    bad = tmp_path / "bad.pth"
    torch.save(data, bad)
    out = tmp_path / "out.pth"
    out.write_bytes(b"previous")
    tool = load_tool()
    with pytest.raises(SystemExit, match="bbox_head.foo.weight"):
        tool.main([str(bad), str(out), "--style", "caffe"])
    del data["state_dict"]["bbox_head.foo.weight"]
    torch.save(data, bad)
    with pytest.raises(SystemExit, match="--style"):
        tool.main([str(bad), str(out)])
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["bad.pth", "out.pth"]
