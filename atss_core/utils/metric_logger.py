"""Smoothed training meters, their log line (framework spec section 6.4) and TensorBoard scalars."""
import datetime
import logging
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


class TensorboardWriter:
    """Training scalars in TensorBoard event files under ``log_dir`` (``tensorboard --logdir log_dir``).

    :meth:`add` collects values every iteration; :meth:`write` stores, as tag
    ``train/<name>``, the mean of each since the previous write, so a write
    every N iterations loses nothing but resolution. ``purge_step`` (the first
    iteration of a resumed run) makes TensorBoard drop the events that an
    interrupted run wrote from that step on.
    """

    def __init__(self, log_dir, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir, purge_step=purge_step)
        self._sums = defaultdict(float)
        self._counts = defaultdict(int)

    def add(self, **scalars):
        for name, value in scalars.items():
            self._sums[name] += float(value)
            self._counts[name] += 1

    def write(self, step):
        for name, total in self._sums.items():
            self._writer.add_scalar(f"train/{name}", total / self._counts[name], step)
        self._sums.clear()
        self._counts.clear()
        self._writer.flush()

    def close(self):
        self._writer.close()


def open_tensorboard(log_dir, purge_step=None):
    """A :class:`TensorboardWriter`, or None (with a warning) when the tensorboard package is missing."""
    try:
        return TensorboardWriter(log_dir, purge_step)
    except ImportError as e:
        logging.getLogger(__name__).warning("no TensorBoard scalars (%s); pip install tensorboard", e)
        return None
