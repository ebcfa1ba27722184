"""The iteration-based training loop (framework spec 6.4; C17, C18, C22)."""
import contextlib
import datetime
import logging
import resource
import sys
import time

import torch

from atss_core.utils.comm import reduce_loss_dict
from atss_core.utils.metric_logger import MetricLogger, eta_string
from atss_core.utils.miscellaneous import unwrap_model

LOG_PERIOD = 20
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype):
    """``DTYPE`` string -> torch dtype; an unknown name is a ValueError."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"DTYPE must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def progress_listeners(model):
    """Every submodule of the unwrapped model that defines ``set_train_progress`` (C22)."""
    return [m for m in unwrap_model(model).modules() if callable(getattr(m, "set_train_progress", None))]


def memory_summary(device):
    """``max mem: N`` (CUDA peak allocated, MB), or the process peak RSS on CPU."""
    if device.type == "cuda":
        return f"max mem: {torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
    return f"max mem (cpu rss): {peak_mb:.0f}"


def _trainable_grads(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def do_train(
    model,
    data_loader,
    optimizer,
    scheduler,
    checkpointer,
    device,
    checkpoint_period,
    arguments,
    dtype="float32",
    clip_grad_norm=0.0,
    test_period=0,
    run_test=None,
):
    """Train from ``arguments["iteration"]`` to ``len(data_loader)`` iterations.

    ``data_loader`` yields ``(ImageList, targets, indices)``; the model returns
    a loss dict in train mode, summed without weights. Saves ``model_{:07d}``
    every ``checkpoint_period`` iterations and ``model_final`` at the end, with
    ``**arguments`` as extra entries (so ``iteration`` is stored). ``dtype``
    "float16"/"bfloat16" autocasts the forward (GradScaler for float16 on
    CUDA); ``clip_grad_norm`` > 0 clips the global L2 norm before the step. If
    ``test_period`` > 0, ``run_test(iteration)`` is called every
    ``test_period`` iterations (the model is put back in train mode after).
    A non-finite total loss raises FloatingPointError before any update.
    """
    logger = logging.getLogger("atss_core.trainer")
    logger.info("Start training")
    device = torch.device(device)
    meters = MetricLogger(delimiter="  ")
    max_iter = len(data_loader)
    start_iter = arguments["iteration"]
    listeners = progress_listeners(model)
    amp_dtype = resolve_dtype(dtype)
    use_autocast = amp_dtype != torch.float32
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None

    model.train()
    start_training_time = time.time()
    end = time.time()
    for iteration, (images, targets, _) in enumerate(data_loader, start_iter):
        data_time = time.time() - end
        iteration += 1
        arguments["iteration"] = iteration
        for module in listeners:
            module.set_train_progress(iteration - 1, max_iter)

        images = images.to(device)
        targets = [target.to(device) for target in targets]
        autocast = torch.autocast(device.type, dtype=amp_dtype) if use_autocast else contextlib.nullcontext()
        with autocast:
            loss_dict = model(images, targets)
        losses = sum(loss.float() for loss in loss_dict.values())

        # Averaged over ranks (an all-reduce), so every rank sees the same
        # value and a non-finite loss stops all of them at the same iteration.
        reduced = reduce_loss_dict(loss_dict)
        reduced_total = sum(loss.detach().float() for loss in reduced.values())
        if not torch.isfinite(reduced_total):
            values = {k: float(v.detach()) for k, v in reduced.items()}
            raise FloatingPointError(f"non-finite loss at iteration {iteration}: {values}; no checkpoint saved")
        meters.update(loss=reduced_total, **reduced)

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(losses).backward()
        else:
            losses.backward()
        if clip_grad_norm > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(_trainable_grads(optimizer), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()

        batch_time = time.time() - end
        end = time.time()
        meters.update(time=batch_time, data=data_time)

        if iteration % LOG_PERIOD == 0 or iteration == max_iter:
            logger.info(
                meters.delimiter.join(
                    [
                        f"eta: {eta_string(meters.time.global_avg, iteration, max_iter)}",
                        f"iter: {iteration}",
                        str(meters),
                        f"lr: {optimizer.param_groups[0]['lr']:.6f}",
                        memory_summary(device),
                    ]
                )
            )
        if checkpoint_period > 0 and iteration % checkpoint_period == 0:
            checkpointer.save(f"model_{iteration:07d}", **arguments)
        if iteration == max_iter:
            checkpointer.save("model_final", **arguments)
        if test_period > 0 and iteration % test_period == 0 and iteration != max_iter and run_test is not None:
            run_test(iteration)
            model.train()

    total_time = time.time() - start_training_time
    logger.info(
        "Total training time: %s (%.4f s / it)",
        datetime.timedelta(seconds=int(total_time)),
        total_time / max(max_iter, 1),
    )
