"""WarmupMultiStepLR against the hand-worked tables of framework spec section 12 (LR)."""
import pytest
import torch

from atss_core.config import cfg as default_cfg
from atss_core.solver import WarmupMultiStepLR, make_lr_scheduler
from atss_core.solver.lr_scheduler import warmup_multistep_factor


def _optimizer(base_lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr, momentum=0.9)


def _lr_trace(scheduler, optimizer, num_iters):
    """(lr used by 1-based iteration i, lr printed after its scheduler step) for i = 1..num_iters."""
    used, printed = [None], [None]
    optimizer.step()  # no grads: a no-op that keeps torch's step-order check quiet
    for _ in range(num_iters):
        used.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
        printed.append(optimizer.param_groups[0]["lr"])
    return used, printed


def test_constant_warmup_table_atss_1x():
    opt = _optimizer(0.01)
    sched = WarmupMultiStepLR(opt, (60000, 80000), 0.1, 1.0 / 3, 500, "constant")
    used, printed = _lr_trace(sched, opt, 80001)
    assert used[1] == pytest.approx(0.0033333, abs=1e-7)
    assert f"{printed[1]:.6f}" == "0.003333"
    assert used[500] == pytest.approx(0.0033333, abs=1e-7)
    assert f"{printed[500]:.6f}" == "0.010000"
    assert used[501] == pytest.approx(0.01)
    assert used[60000] == pytest.approx(0.01)
    assert f"{printed[60000]:.6f}" == "0.001000"
    assert used[60001] == pytest.approx(0.001)
    assert used[80000] == pytest.approx(0.001)
    assert used[80001] == pytest.approx(0.0001)


def test_linear_warmup_retinanet():
    opt = _optimizer(0.005)
    sched = WarmupMultiStepLR(opt, (120000, 160000), 0.1, 1.0 / 3, 500, "linear")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0016667, abs=1e-7)  # lr(e=0)
    _, printed = _lr_trace(sched, opt, 500)
    assert printed[250] == pytest.approx(0.0033333, abs=1e-7)
    assert printed[499] == pytest.approx(0.0049933, abs=1e-7)
    assert printed[500] == pytest.approx(0.005)


def test_factor_function_mmcv_linear_form():
    # spec C20: linear = 1 - (1 - it/W)(1 - ratio), ratio 0.001, W 1000
    for it in (0, 1, 500, 999):
        expected = 1 - (1 - it / 1000) * (1 - 0.001)
        assert warmup_multistep_factor(it, [58640, 80630], 0.1, 0.001, 1000, "linear") == pytest.approx(expected)
    assert warmup_multistep_factor(58640, [58640, 80630], 0.1, 0.001, 1000, "linear") == pytest.approx(0.1)


def test_bias_group_gets_its_own_base_lr():
    p, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.01}, {"params": [b], "lr": 0.02}], lr=0.01)
    WarmupMultiStepLR(opt, (10,), 0.1, 1.0 / 3, 5, "constant")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 / 3, 0.02 / 3])


def test_unsorted_milestones_and_unknown_method_raise():
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        WarmupMultiStepLR(_optimizer(0.01), (80000, 60000))
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        WarmupMultiStepLR(_optimizer(0.01), (10,), warmup_method="cosine")


def test_state_dict_round_trip_keeps_schedule():
    opt = _optimizer(0.01)
    sched = WarmupMultiStepLR(opt, (6, 8), 0.1, 1.0 / 3, 3, "linear")
    _lr_trace(sched, opt, 5)
    state = sched.state_dict()

    opt2 = _optimizer(0.01)
    # Different milestones on purpose: resuming keeps the checkpoint's (quirk of the original).
    sched2 = WarmupMultiStepLR(opt2, (100,), 0.1, 1.0 / 3, 3, "linear")
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 5 and sched2.milestones == [6, 8]
    for _ in range(4):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert sched2.get_last_lr()[0] == pytest.approx(0.0001)  # e = 9 > 8: two decays


def test_make_lr_scheduler_reads_solver_keys():
    cfg = default_cfg.clone()
    cfg.merge_from_list(["SOLVER.STEPS", (4,), "SOLVER.WARMUP_ITERS", 2, "SOLVER.WARMUP_METHOD", "constant"])
    opt = _optimizer(0.1)
    sched = make_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupMultiStepLR)
    _, printed = _lr_trace(sched, opt, 4)
    assert printed[1:] == pytest.approx([0.1 / 3, 0.1, 0.1, 0.01])
