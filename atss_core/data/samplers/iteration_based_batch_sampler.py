"""Wrap a batch sampler to yield exactly ``num_iterations`` batches (the training loop's length)."""
from torch.utils.data import BatchSampler


class IterationBasedBatchSampler(BatchSampler):
    """Re-iterates ``batch_sampler`` until batch number ``num_iterations`` (counting from ``start_iter``).

    Before each pass it calls ``sampler.set_epoch(iteration)`` when the base
    sampler has it, so a seeded sampler reshuffles with the iteration count at
    the start of the pass. ``len()`` is ``num_iterations`` even when resuming.

    Resuming exactly: ``pass_start`` (from :meth:`pass_start_at` of the run
    being resumed) replays the pass that was under way at ``start_iter`` and
    skips its first ``start_iter - pass_start`` batches, so the batches equal
    those of an uninterrupted run. Without it a new pass begins at ``start_iter``.
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0, pass_start=None):
        if pass_start is not None and not 0 <= pass_start <= start_iter:
            raise ValueError(f"pass_start must lie in [0, start_iter={start_iter}], got {pass_start}")
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter
        self.pass_start = start_iter if pass_start is None else pass_start
        # Iteration counts at which passes began; the loader runs ahead of the
        # trainer, so this is looked up by iteration rather than read as "current".
        self._pass_starts = [self.pass_start]

    def __iter__(self):
        iteration = self.pass_start
        self._pass_starts = []
        sampler = getattr(self.batch_sampler, "sampler", None)
        while iteration < self.num_iterations:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(iteration)
            self._pass_starts.append(iteration)
            yielded = False
            for batch in self.batch_sampler:
                yielded = True
                if iteration >= self.start_iter:
                    yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if not yielded:
                raise RuntimeError("the batch sampler yielded no batch (empty dataset?); cannot iterate")

    def pass_start_at(self, iteration):
        """Start of the pass that batch number ``iteration`` (0-based) belongs to, or that ends just before it.

        Pass it with ``start_iter=iteration`` to resume after ``iteration`` trained batches.
        """
        return max(s for s in self._pass_starts if s <= iteration)

    def __len__(self):
        return self.num_iterations
