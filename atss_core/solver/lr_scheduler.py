"""Step learning-rate schedule with warm-up (framework spec section 6.3, C20)."""
from bisect import bisect_right

from torch.optim.lr_scheduler import LRScheduler

WARMUP_METHODS = ("constant", "linear")


def warmup_multistep_factor(it, milestones, gamma, warmup_factor, warmup_iters, warmup_method):
    """Multiplier of the base lr after ``it`` scheduler steps (``it`` = last_epoch).

    constant: ``warmup_factor`` while ``it < warmup_iters``; linear: the factor
    rises as ``warmup_factor * (1 - a) + a`` with ``a = it / warmup_iters``.
    Then ``gamma ** (number of milestones <= it)``.
    """
    warmup = 1.0
    if it < warmup_iters:
        if warmup_method == "constant":
            warmup = warmup_factor
        else:
            alpha = it / warmup_iters
            warmup = warmup_factor * (1 - alpha) + alpha
    return warmup * gamma ** bisect_right(milestones, it)


class WarmupMultiStepLR(LRScheduler):
    """Multi-step decay by ``gamma`` at ``milestones`` after a constant or linear warm-up.

    Construction counts as one step (``last_epoch`` = 0), and the trainer steps
    after every optimizer step, so 1-based iteration ``i`` trains with lr(i - 1).
    ``state_dict`` holds milestones and base lrs too: a resumed run keeps the
    schedule it was started with (as the original).
    """

    def __init__(
        self,
        optimizer,
        milestones,
        gamma=0.1,
        warmup_factor=1.0 / 3,
        warmup_iters=500,
        warmup_method="linear",
        last_epoch=-1,
    ):
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be increasing integers, got {milestones}")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(f"SOLVER.WARMUP_METHOD must be one of {WARMUP_METHODS}, got {warmup_method!r}")
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = warmup_multistep_factor(
            self.last_epoch, self.milestones, self.gamma, self.warmup_factor, self.warmup_iters, self.warmup_method
        )
        return [base_lr * factor for base_lr in self.base_lrs]

