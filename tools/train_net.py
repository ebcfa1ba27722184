#!/usr/bin/env python
"""Train a detector, then evaluate it on DATASETS.TEST (framework spec 8.1).

Single process:  python tools/train_net.py --config-file F [KEY VALUE ...]
Multi-process:   torchrun --nproc_per_node=8 tools/train_net.py --config-file F ...
Multi-node:      torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 tools/train_net.py ...
SLURM:           srun --ntasks-per-node=8 python tools/train_net.py ...   (one task per GPU)

A run whose OUTPUT_DIR holds a ``last_checkpoint`` resumes from it (logged);
``--resume`` insists on that, ``--no-resume`` starts afresh from MODEL.WEIGHT.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atss_core.config import cfg  # noqa: E402
from atss_core.data import make_data_loader  # noqa: E402
from atss_core.data.build import images_per_process  # noqa: E402
from atss_core.engine.inference import run_test  # noqa: E402
from atss_core.engine.trainer import do_train, make_grad_scaler  # noqa: E402
from atss_core.modeling.detector import build_detection_model  # noqa: E402
from atss_core.solver import apply_auto_scale, make_lr_scheduler, make_optimizer  # noqa: E402
from atss_core.utils.checkpoint import DetectronCheckpointer  # noqa: E402
from atss_core.utils.collect_env import collect_env_info  # noqa: E402
from atss_core.utils.comm import all_gather, get_rank, get_world_size  # noqa: E402
from atss_core.utils.logger import setup_logger  # noqa: E402
from atss_core.utils.metric_logger import open_tensorboard  # noqa: E402
from atss_core.utils.miscellaneous import (  # noqa: E402
    add_launch_arguments,
    draw_seed,
    init_distributed,
    load_config,
    local_rank_of,
    mkdir,
    save_config,
    set_deterministic,
    set_random_seed,
    set_rng_states,
)


def dataset_categories(dataset):
    """Class names (index = label - 1) of a training dataset, or None."""
    names = getattr(dataset, "categories", None)
    if names is None and getattr(dataset, "datasets", None):
        names = getattr(dataset.datasets[0], "categories", None)
    return list(names) if names is not None else None


def seed_everything(seed, logger):
    """Seed all RNGs with ``seed`` (drawn on rank 0 and shared if < 0), offset by rank; return the seed."""
    if seed < 0:
        seed = all_gather(draw_seed())[0]
    logger.info("Using seed %d (RNGs of rank r use seed + r)", seed)
    set_random_seed(seed + get_rank())
    return seed


def wants_resume(flag, checkpointer, logger):
    """Resume or not, logged: ``flag`` True (--resume) needs a checkpoint, False (--no-resume) never, None: auto."""
    last = checkpointer.get_checkpoint_file()
    if flag is False:
        if last:
            logger.warning("--no-resume: starting afresh although %s exists; its checkpoints will be overwritten", last)
        return False
    if not last:
        if flag:
            raise FileNotFoundError(
                f"--resume: no last_checkpoint in OUTPUT_DIR {checkpointer.save_dir!r}; nothing to resume"
            )
        logger.info("No last_checkpoint in OUTPUT_DIR: starting afresh")
        return False
    logger.info("%s from %s (OUTPUT_DIR/last_checkpoint); MODEL.WEIGHT is not used%s",
                "Resuming" if flag else "Auto-resuming", last, "" if flag else " (--no-resume starts afresh)")
    return True


def restore_rng_states(states, logger):
    """Set this rank's RNGs to those saved at the checkpoint (rank r's entry; cycled if the world grew)."""
    if not states:
        logger.warning("the checkpoint holds no RNG states: RNGs keep their seeded state")
        return
    set_rng_states(states[get_rank() % len(states)])
    if len(states) != get_world_size():
        logger.warning("the checkpoint has RNG states of %d processes, this run has %d", len(states), get_world_size())


def resume_state(extra, seed, logger):
    """(arguments, sampler state) of a run resumed from a checkpoint's ``extra`` entries; restores the RNGs."""
    arguments = {"iteration": extra.get("iteration", 0)}
    restore_rng_states(extra.get("rng_states"), logger)
    # The data order and augmentations continue those of the interrupted run.
    sampler = extra.get("sampler")
    if sampler is None:
        logger.warning("the checkpoint holds no sampler position: a new pass over the data starts here")
        sampler = {"seed": seed, "pass_start": None}
    logger.info("Continuing after iteration %d (data seed %d)", arguments["iteration"], sampler["seed"])
    return arguments, sampler


def train(cfg, local_rank, distributed, logger, seed, resume=None):
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_detection_model(cfg).to(device)
    if cfg.MODEL.USE_SYNCBN:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    scaler = make_grad_scaler(cfg.DTYPE, device)

    checkpointer = DetectronCheckpointer(
        cfg, model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=get_rank() == 0, scaler=scaler
    )
    resumed = wants_resume(resume, checkpointer, logger)
    if resumed:
        arguments, sampler = resume_state(checkpointer.resume(), seed, logger)
    else:
        checkpointer.load_weights(cfg.MODEL.WEIGHT)
        arguments, sampler = {"iteration": 0}, {"seed": seed, "pass_start": None}

    data_loader = make_data_loader(
        cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"],
        seed=sampler["seed"], pass_start=sampler["pass_start"],
    )
    categories = dataset_categories(data_loader.dataset)
    if categories is not None:
        arguments["categories"] = categories  # read back by the demo

    if distributed:
        on_cuda = device.type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[local_rank] if on_cuda else None,
            output_device=local_rank if on_cuda else None,
            broadcast_buffers=False,
            find_unused_parameters=False,
        )

    event_writer = None
    if get_rank() == 0:
        event_writer = open_tensorboard(cfg.OUTPUT_DIR, purge_step=arguments["iteration"] + 1 if resumed else None)
    do_train(
        model,
        data_loader,
        optimizer,
        scheduler,
        checkpointer,
        device,
        cfg.SOLVER.CHECKPOINT_PERIOD,
        arguments,
        dtype=cfg.DTYPE,
        clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM,
        test_period=cfg.SOLVER.TEST_PERIOD,
        run_test=lambda iteration: run_test(cfg, model, distributed, iteration=iteration),
        scaler=scaler,
        log_period=cfg.SOLVER.LOG_PERIOD,
        event_writer=event_writer,
    )
    if event_writer is not None:
        event_writer.close()
    return model


def main():
    parser = argparse.ArgumentParser(description="atss_core training")
    parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not evaluate after training")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=None,
                        help="continue from OUTPUT_DIR/last_checkpoint (an error if there is none)")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start from MODEL.WEIGHT even if OUTPUT_DIR holds a checkpoint")
    add_launch_arguments(parser)
    args = parser.parse_args()

    local_rank = local_rank_of(args)
    warnings = load_config(cfg, args.config_file, args.opts)
    cfg.defrost()
    scaled = apply_auto_scale(cfg)
    cfg.freeze()
    distributed = init_distributed(local_rank, cfg.MODEL.DEVICE)
    # Checked now rather than when the loaders are built (possibly after days of training).
    images_per_process(cfg.SOLVER.IMS_PER_BATCH, get_world_size(), "SOLVER.IMS_PER_BATCH")
    if not args.skip_test or cfg.SOLVER.TEST_PERIOD > 0:
        images_per_process(cfg.TEST.IMS_PER_BATCH, get_world_size(), "TEST.IMS_PER_BATCH")

    if get_rank() == 0:
        mkdir(cfg.OUTPUT_DIR)
    logger = setup_logger("atss_core", cfg.OUTPUT_DIR, get_rank())
    for warning in warnings:
        logger.warning(warning)
    if scaled:
        logger.warning(scaled)
    logger.info("Using %d processes", get_world_size())
    logger.info(args)
    logger.info("Collecting env info (might take some time)\n%s", collect_env_info())
    with open(args.config_file) as f:
        logger.info("Loaded configuration file %s:\n%s", args.config_file, f.read())
    logger.info("Running with config:\n%s", cfg)
    if get_rank() == 0:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
        save_config(cfg, path)
        logger.info("Saved running config to %s", path)

    set_deterministic(cfg.DETERMINISTIC)
    logger.info("DETERMINISTIC %s", cfg.DETERMINISTIC)
    seed = seed_everything(cfg.SEED, logger)
    model = train(cfg, local_rank, distributed, logger, seed, args.resume)
    if not args.skip_test:
        run_test(cfg, model, distributed)


if __name__ == "__main__":
    main()
