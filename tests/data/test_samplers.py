import pytest
import torch
from torch.utils.data import BatchSampler, Sampler, SequentialSampler

from atss_core.data.build import compute_aspect_groups
from atss_core.data.samplers import DistributedSampler, GroupedBatchSampler, IterationBasedBatchSampler


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
