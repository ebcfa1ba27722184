import os
import random

import numpy as np
import pytest
import torch

from atss_core.utils.miscellaneous import (
    first_slurm_host,
    get_rng_states,
    set_deterministic,
    set_rng_states,
    slurm_env,
)


def draws():
    return random.random(), np.random.rand(), np.random.randn(), torch.rand(3).tolist()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    torch.save({"rng_states": [get_rng_states()]}, tmp_path / "ckpt.pth")
    expected = draws()
    draws()  # move every generator on
    states = torch.load(tmp_path / "ckpt.pth", weights_only=True)["rng_states"][0]
    set_rng_states(states)
    assert draws() == expected


@pytest.mark.parametrize(
    "nodelist, host",
    [("gpu[003-005,7],cpu1", "gpu003"), ("node1", "node1"), ("node1,node2", "node1"), ("a-b[10-12]", "a-b10")],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_slurm_env_for_an_srun_step():
    environ = {"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
               "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_JOB_NODELIST": "gpu[01-04]"}
    assert slurm_env(environ) == {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                                  "MASTER_ADDR": "gpu01", "MASTER_PORT": "29500"}
    assert slurm_env(dict(environ, MASTER_ADDR="head", MASTER_PORT="1234"))["MASTER_ADDR"] == "head"
    # torchrun inside srun, a one-task step, and no SLURM at all are left alone
    assert slurm_env(dict(environ, WORLD_SIZE="8")) == {}
    assert slurm_env(dict(environ, SLURM_STEP_NUM_TASKS="1")) == {}
    assert slurm_env({}) == {}


def test_deterministic_mode_switches_torch_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    try:
        set_deterministic(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
