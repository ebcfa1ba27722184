import pickle
import random

import pytest
import torch
from torch.utils.data import BatchSampler, Sampler, SequentialSampler

from atss_core.data.build import compute_aspect_groups, make_train_batch_sampler
from atss_core.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    SeededDataset,
    ShardedBatchSampler,
)
from atss_core.data.samplers.training import rank_share, sample_seed
from atss_core.utils import comm


class ListSampler(Sampler):
    def __init__(self, order):
        self.order = list(order)

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


GROUP_IDS = [0, 0, 1, 0, 1, 1, 0, 1, 1, 0]


# framework spec 12 / sfzhang15/ATSS tests/test_data_samplers.py
@pytest.mark.parametrize(
    "batch_size, drop_uneven, expected",
    [
        (1, False, [[i] for i in range(10)]),
        (3, False, [[0, 1, 3], [2, 4, 5], [6, 9], [7, 8]]),
        (4, False, [[0, 1, 3, 6], [2, 4, 5, 7], [8], [9]]),
        (3, True, [[0, 1, 3], [2, 4, 5]]),
    ],
)
def test_grouped_batch_sampler_sequential(batch_size, drop_uneven, expected):
    sampler = GroupedBatchSampler(SequentialSampler(range(10)), GROUP_IDS, batch_size, drop_uneven)
    assert list(sampler) == expected
    assert len(sampler) == len(expected)


@pytest.mark.parametrize("drop_uneven, expected", [(False, [[5, 8], [0, 6, 1], [3]]), (True, [[0, 6, 1]])])
def test_grouped_batch_sampler_subset_order(drop_uneven, expected):
    sampler = GroupedBatchSampler(ListSampler([5, 0, 6, 1, 3, 8]), GROUP_IDS, 3, drop_uneven)
    assert list(sampler) == expected


def test_grouped_batch_sampler_len_then_iter_agree_for_random_order():
    torch.manual_seed(0)
    sampler = GroupedBatchSampler(torch.utils.data.RandomSampler(range(10)), GROUP_IDS, 3)
    n = len(sampler)
    batches = list(sampler)
    assert len(batches) == n
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert all(len({GROUP_IDS[i] for i in b}) == 1 for b in batches)


@pytest.mark.parametrize("batch_size, n", [(3, 10), (4, 3), (5, 7)])
def test_iteration_based_batch_sampler(batch_size, n):
    base = BatchSampler(SequentialSampler(range(10)), batch_size, drop_last=False)
    reference = list(base)
    sampler = IterationBasedBatchSampler(base, n)
    batches = list(sampler)
    assert len(sampler) == n and len(batches) == n
    assert batches == [reference[i % len(reference)] for i in range(n)]


def test_iteration_based_batch_sampler_resume():
    base = BatchSampler(SequentialSampler(range(10)), 3, drop_last=False)
    reference = list(base)
    batches = list(IterationBasedBatchSampler(base, 10, start_iter=6))
    assert len(batches) == 4
    assert batches[0] == reference[0]  # each pass restarts the base sampler


def test_iteration_based_batch_sampler_sets_epoch():
    dist = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True)
    epochs = []
    original = dist.set_epoch
    dist.set_epoch = lambda e: (epochs.append(e), original(e))
    batches = list(IterationBasedBatchSampler(BatchSampler(dist, 4, drop_last=False), 7))
    assert epochs == [0, 3, 6]  # 3 batches per pass
    g = torch.Generator()
    g.manual_seed(3)
    assert [i for b in batches[3:6] for i in b] == torch.randperm(10, generator=g).tolist()


def test_iteration_based_batch_sampler_empty_raises():
    with pytest.raises(RuntimeError, match="no batch"):
        list(IterationBasedBatchSampler(BatchSampler(SequentialSampler([]), 2, False), 3))


def test_distributed_sampler_slices():
    # framework spec 12: len 10, world 3 -> 4 each, rank 2 gets [8, 9, 0, 1]
    ranks = [list(DistributedSampler(range(10), num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert ranks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert len(DistributedSampler(range(10), num_replicas=3, rank=0, shuffle=False)) == 4


def test_distributed_sampler_shuffle_uses_epoch_seed():
    def take(epoch, rank):
        s = DistributedSampler(range(10), num_replicas=2, rank=rank, shuffle=True)
        s.set_epoch(epoch)
        return list(s)

    for epoch in (0, 5):
        g = torch.Generator()
        g.manual_seed(epoch)
        perm = torch.randperm(10, generator=g).tolist()
        assert take(epoch, 0) == perm[:5] and take(epoch, 1) == perm[5:]
    assert take(0, 0) != take(5, 0)


def test_distributed_sampler_more_ranks_than_items():
    ranks = [list(DistributedSampler(range(2), num_replicas=5, rank=r, shuffle=False)) for r in range(5)]
    assert ranks == [[0], [1], [0], [1], [0]]


def test_distributed_sampler_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        DistributedSampler(range(4), num_replicas=2, rank=2)


class SizesDataset:
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def get_img_info(self, i):
        w, h = self.sizes[i]
        return {"width": w, "height": h}


def test_aspect_groups():
    # framework spec 12: 640x480 -> 0 (landscape); 480x640 -> 1; 500x500 -> 1
    assert compute_aspect_groups(SizesDataset([(640, 480), (480, 640), (500, 500)])) == [0, 1, 1]


# ------------------------------------------------------------ exact resume
def test_distributed_sampler_seed_offsets_the_epoch():
    s = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=7)
    s.set_epoch(3)
    assert list(s) == torch.randperm(10, generator=torch.Generator().manual_seed(10)).tolist()


def _global_batches(start_iter=0, pass_start=None, n=10, batch=3, iters=11):
    order = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=5)
    return IterationBasedBatchSampler(BatchSampler(order, batch, drop_last=False), iters, start_iter, pass_start)


def test_pass_start_resumes_every_iteration_exactly():
    # 10 images in batches of 3: passes of 4 batches start at iterations 0, 4, 8
    full = _global_batches()
    reference = list(full)
    assert full._pass_starts == [0, 4, 8]
    assert [full.pass_start_at(i) for i in (0, 3, 4, 7, 8, 10)] == [0, 0, 4, 4, 8, 8]
    for k in range(11):
        resumed = list(_global_batches(start_iter=k, pass_start=full.pass_start_at(k)))
        assert resumed == reference[k:], k
    # without the position a mid-pass resume starts a new pass: other batches
    assert list(_global_batches(start_iter=5)) != reference[5:]


def test_pass_start_at_a_pass_end_that_has_not_begun():
    # A loader without prefetch stops right after the last batch of a pass:
    # the next pass is not recorded yet, and resuming replays through the end.
    full = _global_batches()
    it = iter(full)
    for _ in range(4):
        next(it)
    assert full.pass_start_at(4) == 0
    assert list(_global_batches(start_iter=4, pass_start=0)) == list(_global_batches())[4:]


def test_bad_pass_start():
    with pytest.raises(ValueError, match="pass_start"):
        _global_batches(start_iter=2, pass_start=3)


# ----------------------------------------------- batches independent of world size
@pytest.mark.parametrize(
    "batch, world, expected",
    [
        (list(range(8)), 2, [[0, 1, 2, 3], [4, 5, 6, 7]]),
        ([0, 1, 2], 2, [[0, 1], [2]]),
        ([0, 1, 2, 3, 4], 3, [[0, 1], [2, 3], [4]]),
        ([5], 3, [[5], [5], [5]]),
    ],
)
def test_rank_share(batch, world, expected):
    assert [rank_share(batch, r, world) for r in range(world)] == expected


def test_sample_seeds_are_stable_and_distinct():
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1)
    assert len({sample_seed(s, i, j) for s in (0, 1) for i in range(5) for j in range(4)}) == 40


def test_sharded_batches_concatenate_to_the_global_batch():
    def shards(world):
        return [list(ShardedBatchSampler(_global_batches(), r, world, seed=9)) for r in range(world)]

    (single,) = shards(1)
    assert [[idx for idx, _ in b] for b in single] == list(_global_batches())
    for world in (2, 3):
        for batch, shares in zip(single, zip(*shards(world))):
            if len(batch) >= world:
                assert sum(shares, []) == batch
            else:  # the 1-image last batch of each pass, repeated for every process
                assert all(share == batch for share in shares)
    # the keys of a resumed sampler continue the iteration count
    assert list(ShardedBatchSampler(_global_batches(6, pass_start=4), 0, 1, seed=9)) == single[6:]


class RandomDrawDataset:
    """Item = (index, a draw of Python's random), like a random flip; aspect groups from sizes."""

    categories = ["thing"]

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, idx):
        return idx, random.random()

    def get_img_info(self, i):
        w, h = self.sizes[i]
        return {"width": w, "height": h}


def test_train_batches_and_augmentation_do_not_depend_on_world_size(monkeypatch):
    dataset = RandomDrawDataset([(64, 48), (48, 64), (64, 64), (80, 60)] * 5)

    def loaded(rank, world, start_iter=0, pass_start=None, seed=3):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        seeded, sampler = make_train_batch_sampler(dataset, [1], 4, 12, start_iter, seed, pass_start)
        return [[seeded[key] for key in batch] for batch in sampler], sampler

    single, sampler = loaded(0, 1)
    assert len(single) == 12 and all(len({dataset.get_img_info(i)["width"] > dataset.get_img_info(i)["height"]
                                           for i, _ in b}) == 1 for b in single)
    rank0, rank1 = loaded(0, 2)[0], loaded(1, 2)[0]
    assert [a + b for a, b in zip(rank0, rank1)] == single
    assert sampler.state_at(7) == {"seed": 3, "pass_start": sampler.batch_sampler.pass_start_at(7)}
    assert loaded(0, 1, start_iter=7, pass_start=sampler.state_at(7)["pass_start"])[0] == single[7:]
    other_seed = loaded(0, 1, seed=4)[0]
    assert {x for b in other_seed for _, x in b}.isdisjoint({x for b in single for _, x in b})


def test_seeded_dataset_forwards_attributes_and_pickles():
    seeded = SeededDataset(RandomDrawDataset([(4, 4)] * 3))
    assert seeded[(1, 42)] == seeded[(1, 42)] != seeded[(1, 43)]
    assert len(seeded) == 3 and seeded.categories == ["thing"] and seeded.get_img_info(0) == {"width": 4, "height": 4}
    assert not hasattr(seeded, "__getitems__")
    assert pickle.loads(pickle.dumps(seeded))[(2, 5)] == seeded[(2, 5)]
