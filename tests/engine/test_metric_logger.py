"""SmoothedValue / MetricLogger and the ETA format (framework spec section 12, Metric logger)."""
import pytest
import torch

from atss_core.utils.metric_logger import MetricLogger, SmoothedValue, eta_string


def test_smoothed_value_statistics_of_0_to_9():
    v = SmoothedValue()
    for i in range(10):
        v.update(i)
    assert v.count == 10
    assert v.total == 45
    assert v.median == 4  # lower median of an even count
    assert v.avg == pytest.approx(4.5)
    assert v.global_avg == pytest.approx(4.5)


def test_window_is_20_but_global_stats_keep_everything():
    v = SmoothedValue()
    for i in range(100):
        v.update(float(i))
    assert v.median == 89.0  # window 80..99, lower median
    assert v.avg == pytest.approx(89.5)
    assert v.global_avg == pytest.approx(49.5)
    assert v.count == 100


def test_metric_logger_update_attribute_and_str():
    meters = MetricLogger(delimiter="  ")
    for i in range(10):
        meters.update(loss=torch.tensor(float(i)), time=0.5)
    assert meters.loss.median == 4.0
    assert meters.time.global_avg == 0.5
    assert str(meters) == "loss: 4.0000 (4.5000)  time: 0.5000 (0.5000)"
    with pytest.raises(AttributeError):
        meters.not_a_meter


def test_update_rejects_non_numbers():
    with pytest.raises(TypeError, match="loss"):
        MetricLogger().update(loss="nan")


def test_eta_at_iteration_20_of_90000():
    assert eta_string(0.5, 20, 90000) == "12:29:50"
    assert eta_string(0.5, 90000, 90000) == "0:00:00"
