"""torch.distributed training (issue 3 items 1-2) with 2 CPU processes (gloo)."""
import os
import re

import torch

from atss_core.modeling.dense_heads import DENSE_HEADS

LOSS_TAGS = ("train/loss", "train/loss_cls", "train/loss_reg", "train/loss_centerness")


def test_two_processes_train_as_one_with_the_whole_batch(toy_cli, tmp_path):
    # 5 iterations of 4 images: one process with 4, or two with 2 each
    run = ("SOLVER.MAX_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "100")
    one, two = tmp_path / "one", tmp_path / "two"
    toy_cli.run(toy_cli.train_args(one, *run))
    log = toy_cli.run(toy_cli.train_args(two, *run, processes=2))
    assert "Using 2 processes" in log

    expected, found = toy_cli.scalars(one), toy_cli.scalars(two)
    for tag in LOSS_TAGS + ("train/lr",):
        assert sorted(found[tag]) == [1, 2, 3, 4, 5]
        for step, value in found[tag].items():
            assert abs(value - expected[tag][step]) <= 1e-5 * max(1.0, abs(expected[tag][step])), (tag, step)
    # and the weights they end with: float summation order differs between 1 and
    # 2 processes, and a few steps at lr 0.01 amplify that to ~1e-5 in places;
    # a wrong normaliser or a missing reduction is orders of magnitude larger.
    final_one, final_two = (torch.load(d / "model_final.pth", weights_only=True) for d in (one, two))
    assert final_two["iteration"] == 5
    assert set(final_two["model"]) == set(final_one["model"])  # saved unwrapped: no DDP "module." prefix
    for key, value in final_one["model"].items():
        torch.testing.assert_close(final_two["model"][key], value, rtol=1e-3, atol=1e-4)


def test_a_rank_without_gts_does_not_hang(toy_cli):
    # every registered head, rank 1 with empty images (spec C21, C23)
    worker = os.path.join(toy_cli.root, "tests", "engine", "ddp_empty_rank_worker.py")
    out = toy_cli.run(toy_cli.torchrun(2) + [worker], timeout=600)
    done = set(re.findall(r"rank (\d) (\w+) ok", out))
    assert done == {(str(rank), flag) for rank in (0, 1) for flag in DENSE_HEADS}, out[-3000:]
