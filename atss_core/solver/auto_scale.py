"""Linear scaling of the schedule to another total batch (``SOLVER.AUTO_SCALE_REFERENCE_BATCH``).

A recipe tuned for a reference batch B (16 for every shipped config) run
at batch b = ``SOLVER.IMS_PER_BATCH`` takes k = b / B: the learning rate
times k, every iteration count (warm-up, steps, length, checkpoint and test
periods) divided by k, so that the same number of images is seen at each
point of the schedule.
"""
# Iteration counts divided by the factor; 0 (off) stays 0.
ITERATION_KEYS = ("WARMUP_ITERS", "MAX_ITER", "CHECKPOINT_PERIOD", "TEST_PERIOD")


def _iterations(value, factor):
    return max(1, round(value / factor)) if value > 0 else value


def scaled_solver(solver, reference_batch):
    """{key: (old, new)} for the ``SOLVER`` entries that change; {} when ``reference_batch`` <= 0 or equal.

    ``solver`` is a mapping with BASE_LR, STEPS, IMS_PER_BATCH and the
    :data:`ITERATION_KEYS`. Example: reference 16, IMS_PER_BATCH 8 -> factor
    0.5: BASE_LR 0.01 -> 0.005, STEPS (60000, 80000) -> (120000, 160000).
    """
    if reference_batch <= 0 or solver["IMS_PER_BATCH"] == reference_batch:
        return {}
    factor = solver["IMS_PER_BATCH"] / reference_batch
    new = {key: _iterations(solver[key], factor) for key in ITERATION_KEYS}
    new["STEPS"] = tuple(_iterations(step, factor) for step in solver["STEPS"])
    new["BASE_LR"] = solver["BASE_LR"] * factor
    new["AUTO_SCALE_REFERENCE_BATCH"] = solver["IMS_PER_BATCH"]
    old = dict(solver, STEPS=tuple(solver["STEPS"]), AUTO_SCALE_REFERENCE_BATCH=reference_batch)
    return {key: (old[key], value) for key, value in new.items() if old[key] != value}


def apply_auto_scale(cfg):
    """Rescale ``cfg.SOLVER`` in place (cfg must not be frozen); return a log message, or None if unchanged.

    The scaled config records ``AUTO_SCALE_REFERENCE_BATCH = IMS_PER_BATCH``,
    so saving and re-running it does not scale twice.
    """
    reference = cfg.SOLVER.AUTO_SCALE_REFERENCE_BATCH
    changes = scaled_solver(cfg.SOLVER, reference)
    if not changes:
        return None
    for key, (_, value) in changes.items():
        cfg.SOLVER[key] = value
    listed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
    return (
        f"SOLVER.AUTO_SCALE_REFERENCE_BATCH: rescaled the schedule for IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} "
        f"(reference batch {reference}, factor {cfg.SOLVER.IMS_PER_BATCH / reference:g}): {listed}"
    )
