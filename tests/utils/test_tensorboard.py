import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from atss_core.utils.metric_logger import TensorboardWriter, open_tensorboard


def scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_each_write_is_the_mean_since_the_previous_one(tmp_path):
    writer = TensorboardWriter(str(tmp_path))
    for it, loss in enumerate([1.0, 2.0, 3.0, 5.0], 1):
        writer.add(loss=loss, lr=0.01 * it)
        if it % 2 == 0:
            writer.write(it)
    writer.close()
    found = scalars(tmp_path)
    assert found["train/loss"] == [(2, 1.5), (4, 4.0)]
    assert [step for step, _ in found["train/lr"]] == [2, 4]
    assert found["train/lr"][1][1] == pytest.approx(0.035)


def test_a_resumed_run_purges_the_interrupted_steps(tmp_path):
    first = open_tensorboard(str(tmp_path))
    for it in range(1, 6):
        first.add(loss=float(it))
        first.write(it)
    first.close()
    resumed = open_tensorboard(str(tmp_path), purge_step=4)  # resumed after iteration 3
    for it in (4, 5):
        resumed.add(loss=10.0 * it)
        resumed.write(it)
    resumed.close()
    assert scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]
