"""How one global training batch reaches each process, independently of the number of processes.

Every process draws the same global batches of ``SOLVER.IMS_PER_BATCH``
images (one seeded order, grouped and chunked identically); process r
takes its contiguous share. Each image's random transforms are seeded by
(seed, iteration, position in the global batch), so an image is
augmented identically on 1 or W processes, with any number of loader
workers, and after a resume. With the heads' global loss normalisers
(spec C21) and DDP's gradient mean, W processes thus train as one
process with the whole batch (up to float summation order and padding).
"""
import random

import numpy as np
from torch.utils.data import Dataset, Sampler


def sample_seed(seed, iteration, position):
    """Seed of the image at ``position`` of global batch ``iteration`` (stable across processes)."""
    return int(np.random.SeedSequence([seed, iteration, position]).generate_state(1)[0])


def rank_share(batch, rank, world_size):
    """Contiguous share of process ``rank``; sizes differ by at most one.

    A batch with fewer items than processes (a short last batch of an aspect
    group) is first repeated cyclically, so that no process gets an empty batch.
    """
    if len(batch) < world_size:
        batch = [batch[i % len(batch)] for i in range(world_size)]
    base, extra = divmod(len(batch), world_size)
    start = rank * base + min(rank, extra)
    return batch[start : start + base + (rank < extra)]


class ShardedBatchSampler(Sampler):
    """This process's share of each global batch, as ``(dataset index, sample seed)`` keys for :class:`SeededDataset`.

    Args:
        batch_sampler: an :class:`IterationBasedBatchSampler` over global batches.
        rank, world_size: this process and the number of processes.
        seed: the run's seed (``SEED``), mixed into every sample seed.
    """

    def __init__(self, batch_sampler, rank, world_size, seed):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size
        self.seed = seed

    def __iter__(self):
        for iteration, batch in enumerate(self.batch_sampler, self.batch_sampler.start_iter):
            keys = [(idx, sample_seed(self.seed, iteration, j)) for j, idx in enumerate(batch)]
            yield rank_share(keys, self.rank, self.world_size)

    def __len__(self):
        return len(self.batch_sampler)

    def state_at(self, iteration):
        """``{"seed", "pass_start"}`` that resume the data exactly after ``iteration`` trained batches."""
        return {"seed": self.seed, "pass_start": self.batch_sampler.pass_start_at(iteration)}


class SeededDataset(Dataset):
    """``dataset[idx]`` with Python's ``random`` (which drives the transforms) seeded per sample.

    Indexed by the ``(idx, seed)`` keys of :class:`ShardedBatchSampler`; every
    other attribute (``categories``, ``get_img_info``, ...) is the wrapped dataset's.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, key):
        idx, seed = key
        random.seed(seed)
        return self.dataset[idx]

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        # Dunders (e.g. a batched __getitems__ that would bypass the seeding)
        # and "dataset" itself (while unpickling) are not forwarded.
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
