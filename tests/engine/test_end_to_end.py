"""The whole loop through the command-line tools, on a tiny generated toy dataset.

Each test runs the real scripts in a subprocess (as a user would), pointing
PATHS_CATALOG at a user catalog file, which is also how users plug in their
own COCO-format data.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from atss_core.data.datasets.toy_shapes import ensure_toy_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml")

CATALOG = '''
import os

class DatasetCatalog:
    @staticmethod
    def get(name):
        split = {"tiny_train": "train", "tiny_val": "val"}[name]
        root = os.environ["TINY_TOY_ROOT"]
        return dict(factory="COCODataset", args=dict(
            root=os.path.join(root, split),
            ann_file=os.path.join(root, "annotations", "toy_shapes_%s.json" % split)))
'''

SMALL = [
    "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('tiny_train',)", "DATASETS.TEST", "('tiny_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4", "TEST.IMS_PER_BATCH", "4",
    "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "(1000,)",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_toy")
    ensure_toy_dataset(str(root / "toy"), num_train=24, num_val=6, seed=3, size=64)
    catalog = root / "tiny_catalog.py"
    catalog.write_text(CATALOG)
    env = dict(os.environ, TINY_TOY_ROOT=str(root / "toy"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return dict(root=root, catalog=str(catalog), env=env)


def run(args, tiny, timeout=300):
    proc = subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=tiny["env"], capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def train_args(tiny, out_dir, *opts, skip_test=False):
    flags = ["--skip-test"] if skip_test else []  # flags go before the KEY VALUE overrides
    return (["tools/train_net.py", "--config-file", CONFIG] + flags
            + ["PATHS_CATALOG", tiny["catalog"], "OUTPUT_DIR", str(out_dir)] + SMALL + list(opts))


def logged(out, key):
    """{iteration: (median, global_avg)} of ``key`` in the training log lines."""
    found = {}
    for line in out.splitlines():
        it = re.search(r"iter: (\d+)", line)
        val = re.search(rf"\b{key}: ([-\d.]+) \(([-\d.]+)\)", line)
        if it and val:
            found[int(it.group(1))] = (float(val.group(1)), float(val.group(2)))
    return found


def logged_lr(out):
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"iter: (\d+) .*?lr: ([\d.]+)", out)}


def test_train_evaluate_and_demo(tiny, tmp_path):
    out_dir = tmp_path / "run"
    log = run(train_args(tiny, out_dir, "SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "15"), tiny)

    # progress lines carry iteration, every loss, lr, time, ETA and memory
    lines = [line for line in log.splitlines() if "iter: 20" in line]
    assert lines, log[-3000:]
    for field in ("eta:", "loss_cls:", "loss_reg:", "loss_centerness:", "lr:", "time:", "max mem"):
        assert field in lines[0]
    # the loss goes down: mean over iterations 21..30 below the mean over 1..20
    loss = logged(log, "loss")
    first20 = loss[20][1]
    last10 = (30 * loss[30][1] - 20 * first20) / 10
    assert last10 < first20, loss

    for name in ("model_0000015.pth", "model_0000030.pth", "model_final.pth", "last_checkpoint", "config.yml"):
        assert (out_dir / name).exists(), name
    assert (out_dir / "last_checkpoint").read_text().strip().endswith("model_final.pth")
    ckpt = torch.load(out_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 30
    assert ckpt["categories"] == ["circle", "square", "triangle"]

    # train_net evaluated at the end, and test_net evaluates the named weights
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in log
    test_log = run(
        ["tools/test_net.py", "--config-file", CONFIG, "PATHS_CATALOG", tiny["catalog"],
         "MODEL.WEIGHT", str(out_dir / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")] + SMALL,
        tiny,
    )
    summary = [line for line in test_log.splitlines() if line.lstrip().startswith("Average ")]
    assert len(summary) == 12, test_log[-3000:]
    inference_dir = tmp_path / "eval" / "inference" / "tiny_val"
    preds = torch.load(inference_dir / "predictions.pth", weights_only=True)
    assert len(preds) == 6
    results = json.loads((inference_dir / "bbox.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score"} <= set(r) for r in results)

    # the demo draws PNGs and prints their paths
    demo_out = tmp_path / "demo"
    demo_log = run(
        ["demo/atss_demo.py", "--config-file", CONFIG, "--weights", str(out_dir / "model_final.pth"),
         "--input", str(tiny["root"] / "toy" / "val"), "--max-images", "2", "--output-dir", str(demo_out),
         "--confidence-threshold", "0.0", "MODEL.DEVICE", "cpu", "PATHS_CATALOG", tiny["catalog"]],
        tiny,
    )
    pngs = sorted(demo_out.glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        assert str(p) in demo_log
        assert p.stat().st_size > 0


def test_resume_continues_at_the_right_iteration_and_lr(tiny, tmp_path):
    full = tmp_path / "full"
    log_full = run(train_args(tiny, full, "SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "20",
                              "SOLVER.STEPS", "(25,)", skip_test=True), tiny)

    # a later run in another dir, holding only the mid-run checkpoint
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "model_0000020.pth").write_bytes((full / "model_0000020.pth").read_bytes())
    (resumed / "last_checkpoint").write_text(str(resumed / "model_0000020.pth"))
    log_res = run(train_args(tiny, resumed, "SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "20",
                             "SOLVER.STEPS", "(25,)", skip_test=True), tiny)

    assert "resuming from" in log_res
    lr_full, lr_res = logged_lr(log_full), logged_lr(log_res)
    assert 20 not in lr_res and 40 in lr_res  # it did not redo iterations 1..20
    assert lr_res[40] == pytest.approx(lr_full[40]) == pytest.approx(0.001)  # past the step at 25
    assert torch.load(resumed / "model_final.pth", weights_only=True)["iteration"] == 40

