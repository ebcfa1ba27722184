"""Smoothed training meters and their log line (framework spec section 6.4)."""
import datetime
import statistics
from collections import defaultdict, deque

import torch


class SmoothedValue:
    """A series of floats seen through a window (``median``, ``avg``) and in full
    (``global_avg``, ``count``, ``total``)."""

    def __init__(self, window_size=20):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value):
        self.deque.append(value)
        self.count += 1
        self.total += value

    @property
    def median(self):
        # The lower median for even counts, as torch.median in the original.
        return statistics.median_low(self.deque)

    @property
    def avg(self):
        return sum(self.deque) / len(self.deque)

    @property
    def global_avg(self):
        return self.total / self.count


class MetricLogger:
    """Named ``SmoothedValue`` meters, readable as attributes (``meters.time``)."""

    def __init__(self, delimiter="\t", window_size=20):
        self.meters = defaultdict(lambda: SmoothedValue(window_size))
        self.delimiter = delimiter

    def update(self, **kwargs):
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (float, int)):
                raise TypeError(f"meter '{name}' needs a float, an int or a one-element tensor, got {value!r}")
            self.meters[name].update(value)

    def __getattr__(self, name):
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute or meter '{name}'")

    def __str__(self):
        return self.delimiter.join(
            f"{name}: {meter.median:.4f} ({meter.global_avg:.4f})" for name, meter in self.meters.items()
        )


def eta_string(seconds_per_iter, iteration, max_iter):
    """Remaining time as ``H:MM:SS`` (whole seconds, truncated)."""
    return str(datetime.timedelta(seconds=int(seconds_per_iter * (max_iter - iteration))))
