"""The iteration-based training loop (framework spec 6.4; C17, C18, C22)."""
import contextlib
import datetime
import logging
import math
import resource
import sys
import time

import torch

from atss_core.utils.comm import all_gather, reduce_loss_dict
from atss_core.utils.metric_logger import MetricLogger, eta_string
from atss_core.utils.miscellaneous import get_rng_states, unwrap_model

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype):
    """``DTYPE`` string -> torch dtype; an unknown name is a ValueError."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"DTYPE must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def make_grad_scaler(dtype, device):
    """The ``torch.amp.GradScaler`` float16 training needs (None for float32/bfloat16)."""
    if resolve_dtype(dtype) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def progress_listeners(model):
    """Every submodule of the unwrapped model that defines ``set_train_progress`` (C22)."""
    return [m for m in unwrap_model(model).modules() if callable(getattr(m, "set_train_progress", None))]


def peak_memory_mb(device):
    """CUDA peak allocated memory on ``device``, or the process's peak RSS on CPU, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def memory_summary(device):
    """``max mem: N`` (CUDA peak allocated, MB), or the process peak RSS on CPU."""
    label = "max mem" if device.type == "cuda" else "max mem (cpu rss)"
    return f"{label}: {peak_memory_mb(device):.0f}"


def _trainable_grads(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def check_finite_parameters(model, iteration):
    """FloatingPointError naming the first parameters that hold NaN/inf.

    Run on every rank before a save, so that all ranks stop together and the
    last good checkpoint is never replaced by a broken one.
    """
    bad = [name for name, p in unwrap_model(model).named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"non-finite weights after iteration {iteration} in {len(bad)} parameters, e.g. {bad[:3]}; "
            "not saving, the last checkpoint stays the last good one"
        )


def save_checkpoint(checkpointer, name, model, data_loader, arguments):
    """Save ``name`` with ``arguments``, every rank's RNG states and the sampler position.

    A collective (RNG states are gathered): every rank calls it; rank 0 writes.
    """
    iteration = arguments["iteration"]
    check_finite_parameters(model, iteration)
    extra = dict(arguments, rng_states=all_gather(get_rng_states()))
    batch_sampler = getattr(data_loader, "batch_sampler", None)
    if hasattr(batch_sampler, "state_at"):
        extra["sampler"] = batch_sampler.state_at(iteration)
    checkpointer.save(name, **extra)


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
    scaler=None,
    log_period=20,
    event_writer=None,
):
    """Train from ``arguments["iteration"]`` to ``len(data_loader)`` iterations.

    ``data_loader`` yields ``(ImageList, targets, indices)``; the model returns
    a loss dict in train mode, summed without weights. Saves ``model_{:07d}``
    every ``checkpoint_period`` iterations and ``model_final`` at the end
    (:func:`save_checkpoint`: ``**arguments`` such as ``iteration``, RNG
    states, sampler position). ``dtype`` "float16"/"bfloat16" autocasts the
    forward; float16 scales the loss with ``scaler`` (made here if None).
    ``clip_grad_norm`` > 0 clips the global L2 norm before the step. If
    ``test_period`` > 0, ``run_test(iteration)`` is called every
    ``test_period`` iterations (the model is put back in train mode after).
    Every ``log_period`` iterations a line is logged and ``event_writer`` (a
    ``TensorboardWriter``, optional) writes the means of the losses, lr,
    time, data time and memory since its previous write.
    A non-finite total loss raises FloatingPointError before any update.
    """
    logger = logging.getLogger("atss_core.trainer")
    device = torch.device(device)
    meters = MetricLogger(delimiter="  ")
    max_iter = len(data_loader)
    start_iter = arguments["iteration"]
    logger.info("Start training at iteration %d of %d", start_iter + 1, max_iter)
    listeners = progress_listeners(model)
    amp_dtype = resolve_dtype(dtype)
    use_autocast = amp_dtype != torch.float32
    if scaler is None:
        scaler = make_grad_scaler(amp_dtype, device)

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
        # One device-to-host copy per iteration serves the guard, the meters and
        # the event writer; any further one would wait for the backward pass.
        reduced = reduce_loss_dict(loss_dict)
        parts = [v.detach().float() for v in reduced.values()]
        total, *values = torch.stack([sum(parts), *parts]).tolist()
        scalars = dict(zip(reduced, values))
        if not math.isfinite(total):
            raise FloatingPointError(f"non-finite loss at iteration {iteration}: {scalars}; no checkpoint saved")
        meters.update(loss=total, **scalars)

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
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        scheduler.step()

        batch_time = time.time() - end
        end = time.time()
        meters.update(time=batch_time, data=data_time)
        if event_writer is not None:
            event_writer.add(
                loss=total, **scalars, lr=lr, time=batch_time, data_time=data_time,
                max_mem_mb=peak_memory_mb(device),
            )

        if iteration % log_period == 0 or iteration == max_iter:
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
            if event_writer is not None:
                event_writer.write(iteration)
        if checkpoint_period > 0 and iteration % checkpoint_period == 0:
            save_checkpoint(checkpointer, f"model_{iteration:07d}", model, data_loader, arguments)
        if iteration == max_iter:
            save_checkpoint(checkpointer, "model_final", model, data_loader, arguments)
        if test_period > 0 and iteration % test_period == 0 and iteration != max_iter and run_test is not None:
            run_test(iteration)
            model.train()

    total_time = time.time() - start_training_time
    logger.info(
        "Total training time: %s (%.4f s / it)",
        datetime.timedelta(seconds=int(total_time)),
        total_time / max(max_iter, 1),
    )
