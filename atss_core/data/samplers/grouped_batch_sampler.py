"""Batch sampler that never mixes groups (e.g. landscape and portrait) in a batch.

Rule (framework spec 5.6; sfzhang15/ATSS ``data/samplers/grouped_batch_sampler.py``):
split the base sampler's order per group keeping the relative order, chunk
each group into batches of ``batch_size`` (a short last batch is kept unless
``drop_uneven``), then order all batches by the sampler position of their
first element.
"""
from torch.utils.data import BatchSampler, Sampler


class GroupedBatchSampler(BatchSampler):
    def __init__(self, sampler, group_ids, batch_size, drop_uneven=False):
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler should be a torch.utils.data.Sampler, got {sampler!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven
        self.groups = sorted(set(self.group_ids))
        self._cached_batches = None

    def _prepare_batches(self):
        order = list(self.sampler)
        position = {idx: pos for pos, idx in enumerate(order)}
        per_group = {g: [] for g in self.groups}
        for idx in order:
            per_group[self.group_ids[idx]].append(idx)
        batches = []
        for members in per_group.values():
            batches += [members[i : i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        batches.sort(key=lambda b: position[b[0]])
        if self.drop_uneven:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def __iter__(self):
        # __len__ materialises one epoch of batches; the next pass reuses it so
        # that len() and iteration agree for random samplers (as the original).
        batches = self._cached_batches if self._cached_batches is not None else self._prepare_batches()
        self._cached_batches = None
        return iter(batches)

    def __len__(self):
        if self._cached_batches is None:
            self._cached_batches = self._prepare_batches()
        return len(self._cached_batches)
