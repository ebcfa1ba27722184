import pytest

from atss_core.config import cfg as base_cfg
from atss_core.solver import apply_auto_scale
from atss_core.solver.auto_scale import scaled_solver


def atss_1x(ims_per_batch, reference):
    cfg = base_cfg.clone()
    cfg.merge_from_file("configs/atss/atss_R_50_FPN_1x.yaml")
    cfg.SOLVER.IMS_PER_BATCH = ims_per_batch
    cfg.SOLVER.AUTO_SCALE_REFERENCE_BATCH = reference
    return cfg


def test_half_batch_atss_1x():
    # 1x at 16 images: lr 0.01, warm-up 500, steps 60k/80k, 90k its, checkpoints every 2500
    cfg = atss_1x(8, 16)
    message = apply_auto_scale(cfg)
    s = cfg.SOLVER
    assert s.BASE_LR == pytest.approx(0.005)
    assert (s.WARMUP_ITERS, s.STEPS, s.MAX_ITER, s.CHECKPOINT_PERIOD) == (1000, (120000, 160000), 180000, 5000)
    assert s.TEST_PERIOD == 0  # off stays off
    assert s.AUTO_SCALE_REFERENCE_BATCH == 8
    assert "factor 0.5" in message and "BASE_LR 0.01 -> 0.005" in message and "MAX_ITER 90000 -> 180000" in message
    assert apply_auto_scale(cfg) is None  # the saved config does not scale twice


def test_larger_batch_rounds_iterations():
    # 16 -> 48 images: factor 3; 500/3 = 166.7 -> 167, 80000/3 = 26666.7 -> 26667
    cfg = atss_1x(48, 16)
    cfg.SOLVER.TEST_PERIOD = 7330
    apply_auto_scale(cfg)
    s = cfg.SOLVER
    assert s.BASE_LR == pytest.approx(0.03)
    assert (s.WARMUP_ITERS, s.STEPS, s.MAX_ITER, s.CHECKPOINT_PERIOD, s.TEST_PERIOD) == (
        167, (20000, 26667), 30000, 833, 2443)


def test_off_or_same_batch_changes_nothing():
    for ims, reference in ((8, 0), (16, 16)):
        cfg = atss_1x(ims, reference)
        before = cfg.dump()
        assert apply_auto_scale(cfg) is None and cfg.dump() == before


def test_tiny_counts_stay_positive():
    solver = dict(IMS_PER_BATCH=64, BASE_LR=0.01, WARMUP_ITERS=1, STEPS=(2,), MAX_ITER=3,
                  CHECKPOINT_PERIOD=1, TEST_PERIOD=0)
    changes = scaled_solver(solver, 2)  # factor 32
    assert changes["MAX_ITER"] == (3, 1) and changes["STEPS"] == ((2,), (1,))
    assert "WARMUP_ITERS" not in changes and "CHECKPOINT_PERIOD" not in changes  # already 1
