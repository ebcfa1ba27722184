"""Launcher arguments: torchrun's env, and the legacy --local_rank / --local-rank flags."""
import argparse

import pytest

from atss_core.utils.miscellaneous import add_launch_arguments, local_rank_of


def parse(argv, env, monkeypatch):
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    add_launch_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["--config-file", "c.yaml"], {}, 0),
        (["--config-file", "c.yaml"], {"LOCAL_RANK": "3"}, 3),
        (["--local_rank", "2", "--config-file", "c.yaml"], {}, 2),
        (["--local-rank=5", "--config-file", "c.yaml"], {}, 5),
    ],
)
def test_local_rank_sources(argv, env, expected, monkeypatch):
    args = parse(argv, env, monkeypatch)
    assert local_rank_of(args) == expected


def test_trailing_overrides_are_kept(monkeypatch):
    args = parse(["--config-file", "c.yaml", "SOLVER.MAX_ITER", "10", "MODEL.DEVICE", "cpu"], {}, monkeypatch)
    assert args.opts == ["SOLVER.MAX_ITER", "10", "MODEL.DEVICE", "cpu"]
