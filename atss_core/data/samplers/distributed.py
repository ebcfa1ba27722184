"""Sampler that gives each rank a contiguous slice of a padded index list.

Semantics of the sampler in sfzhang15/ATSS ``data/samplers/distributed.py``
(a copy of an early torch one), kept because distributed evaluation relies on
the contiguous slices: indices are padded by repeating the first ones up to
``num_samples * num_replicas``, and rank r takes slice
``[r * num_samples, (r + 1) * num_samples)``. With one replica it is the
seeded global order that training splits per batch (samplers/training.py).
"""
import math

import torch
from torch.utils.data import Sampler

from atss_core.utils import comm


class DistributedSampler(Sampler):
    """Each rank's slice of one shared order: ``randperm(len, seed + epoch)`` if ``shuffle``, else 0..len-1."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0):
        num_replicas = comm.get_world_size() if num_replicas is None else num_replicas
        rank = comm.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            # seeded by seed and epoch only, so every rank draws the same permutation
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        pad = self.total_size - n
        if pad > 0 and n > 0:
            indices += (indices * math.ceil(pad / n))[:pad]
        start = self.rank * self.num_samples
        return iter(indices[start : start + self.num_samples])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch
