"""Wrap a batch sampler to yield exactly ``num_iterations`` batches (the training loop's length)."""
from torch.utils.data import BatchSampler


class IterationBasedBatchSampler(BatchSampler):
    """Re-iterates ``batch_sampler`` until batch number ``num_iterations`` (counting from ``start_iter``).

    Before each pass it calls ``sampler.set_epoch(iteration)`` when the base
    sampler has it, so a DistributedSampler reshuffles with the iteration
    count as seed. ``len()`` is ``num_iterations`` even when resuming.
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0):
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def __iter__(self):
        iteration = self.start_iter
        sampler = getattr(self.batch_sampler, "sampler", None)
        while iteration < self.num_iterations:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(iteration)
            yielded = False
            for batch in self.batch_sampler:
                yielded = True
                yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if not yielded:
                raise RuntimeError("the batch sampler yielded no batch (empty dataset?); cannot iterate")

    def __len__(self):
        return self.num_iterations
