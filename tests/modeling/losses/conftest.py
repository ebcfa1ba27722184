"""Shared fixtures of the loss tests."""
import types

import pytest

import atss_core.utils.comm as comm


class _FakeDist:
    """A second rank whose contributions to the all-reduces are fixed values."""

    class ReduceOp:
        SUM = "sum"

    def __init__(self, other_rank_values):
        self.other = list(other_rank_values)
        self.calls = 0

    def all_reduce(self, tensor, op):
        assert op == "sum"
        tensor += self.other[self.calls]
        self.calls += 1


@pytest.fixture
def two_ranks(monkeypatch):
    """``install(*values)``: a 2-rank world whose other rank adds values[i] to the i-th all-reduce."""

    def install(*other_rank_values):
        fake = _FakeDist(other_rank_values)
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        monkeypatch.setattr(comm, "dist", types.SimpleNamespace(all_reduce=fake.all_reduce, ReduceOp=fake.ReduceOp))
        return fake

    return install
