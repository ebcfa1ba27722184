"""Resume after ``kill -9`` (issue 3 items 3-4, 12): same losses, lr and weights as an uninterrupted run."""
import importlib.util
import os
import re
import signal
import time

import pytest
import torch

from atss_core.config import cfg as base_cfg
from atss_core.modeling.detector import build_detection_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSS_TAGS = ("train/loss", "train/loss_cls", "train/loss_reg", "train/loss_centerness", "train/lr")
# 9 iterations over passes of 4 batches; checkpoints at 3 and 6; a loader worker
# that runs ahead of the trainer.
RUN = ("SOLVER.MAX_ITER", "9", "SOLVER.CHECKPOINT_PERIOD", "3", "DATALOADER.NUM_WORKERS", "1")


def wait_for_checkpoint(out_dir, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out_dir / "last_checkpoint").exists():
            return (out_dir / "last_checkpoint").read_text()
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"no checkpoint in {out_dir} after {timeout} s")


def test_kill_9_then_resume_continues_exactly(toy_cli, tmp_path):
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    toy_cli.run(toy_cli.train_args(reference, *RUN))

    proc = toy_cli.popen(toy_cli.train_args(victim, *RUN))
    try:
        last = wait_for_checkpoint(victim, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader worker
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (victim / "model_final.pth").exists()
    done = int(re.search(r"model_(\d+)\.pth", last).group(1))

    log = toy_cli.run(toy_cli.train_args(victim, *RUN))
    assert f"Auto-resuming from {victim / f'model_{done:07d}.pth'}" in log
    assert f"Continuing after iteration {done}" in log
    assert f"iter: {done} " not in log and "iter: 9 " in log

    expected, resumed = toy_cli.scalars(reference), toy_cli.scalars(victim)
    assert sorted(resumed["train/loss"]) == list(range(done + 1, 10))
    for tag in LOSS_TAGS:
        for step, value in resumed[tag].items():
            assert value == pytest.approx(expected[tag][step], rel=1e-6, abs=1e-7), (tag, step)
    final, final_ref = (torch.load(d / "model_final.pth", weights_only=True) for d in (victim, reference))
    for key, value in final_ref["model"].items():
        torch.testing.assert_close(final["model"][key], value, rtol=1e-5, atol=1e-7)
    assert final["scheduler"]["last_epoch"] == 9

    # The run's outputs: plain log, TensorBoard scalars of every kind.
    assert (victim / "log.txt").exists()
    assert {"train/time", "train/data_time", "train/max_mem_mb"} <= set(resumed)

    # test_net evaluates MODEL.WEIGHT, never the OUTPUT_DIR's (here final) last_checkpoint
    weight = reference / "model_0000003.pth"
    log = toy_cli.run(toy_cli.test_args(victim, weight))
    assert f"Initialising the model from {weight}" in log and "Resuming" not in log


def load_script(relative_path):
    spec = importlib.util.spec_from_file_location("script_under_test", os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_loads_model_weight_not_a_stale_last_checkpoint(tmp_path):
    cfg = base_cfg.clone()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "atss_toy.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    weights = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        weights[seed] = build_detection_model(cfg).state_dict()
        torch.save({"model": weights[seed]}, tmp_path / f"model_{seed}.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "model_2.pth"))  # stale
    cfg.OUTPUT_DIR, cfg.MODEL.WEIGHT = str(tmp_path), str(tmp_path / "model_1.pth")
    demo = load_script(os.path.join("demo", "predictor.py")).COCODemo(cfg, categories=["a", "b", "c"])
    for key, value in demo.model.state_dict().items():
        assert torch.equal(value, weights[1][key]), key


class FakeCheckpointer:
    save_dir = "out"

    def __init__(self, last):
        self.last = last

    def get_checkpoint_file(self):
        return self.last


def test_resume_flags(caplog):
    wants_resume = load_script(os.path.join("tools", "train_net.py")).wants_resume
    logger = __import__("logging").getLogger("test_resume_flags")
    with caplog.at_level("INFO"):
        assert wants_resume(None, FakeCheckpointer("out/model_0000010.pth"), logger)
        assert "Auto-resuming from out/model_0000010.pth" in caplog.text
        assert wants_resume(True, FakeCheckpointer("out/model_0000010.pth"), logger)
        assert not wants_resume(None, FakeCheckpointer(""), logger)
        assert not wants_resume(False, FakeCheckpointer("out/model_0000010.pth"), logger)
        assert "--no-resume: starting afresh although out/model_0000010.pth exists" in caplog.text
    with pytest.raises(FileNotFoundError, match="--resume: no last_checkpoint in OUTPUT_DIR 'out'"):
        wants_resume(True, FakeCheckpointer(""), logger)
