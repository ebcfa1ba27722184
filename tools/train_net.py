#!/usr/bin/env python
"""Train a detector, then evaluate it on DATASETS.TEST (framework spec 8.1).

Single process:  python tools/train_net.py --config-file F [KEY VALUE ...]
Multi-process:   torchrun --nproc_per_node=8 tools/train_net.py --config-file F ...
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atss_core.config import cfg  # noqa: E402
from atss_core.data import make_data_loader  # noqa: E402
from atss_core.engine.inference import run_test  # noqa: E402
from atss_core.engine.trainer import do_train  # noqa: E402
from atss_core.modeling.detector import build_detection_model  # noqa: E402
from atss_core.solver import make_lr_scheduler, make_optimizer  # noqa: E402
from atss_core.utils.checkpoint import DetectronCheckpointer  # noqa: E402
from atss_core.utils.collect_env import collect_env_info  # noqa: E402
from atss_core.utils.comm import all_gather, get_rank, get_world_size  # noqa: E402
from atss_core.utils.logger import setup_logger  # noqa: E402
from atss_core.utils.miscellaneous import (  # noqa: E402
    add_launch_arguments,
    draw_seed,
    init_distributed,
    load_config,
    local_rank_of,
    mkdir,
    save_config,
    set_random_seed,
)


def dataset_categories(dataset):
    """Class names (index = label - 1) of a training dataset, or None."""
    names = getattr(dataset, "categories", None)
    if names is None and getattr(dataset, "datasets", None):
        names = getattr(dataset.datasets[0], "categories", None)
    return list(names) if names is not None else None


def seed_everything(seed, logger):
    """Seed all RNGs with ``seed`` (drawn on rank 0 and shared if < 0), offset by rank."""
    if seed < 0:
        seed = all_gather(draw_seed())[0]
    logger.info("Using seed %d (RNGs of rank r use seed + r)", seed)
    set_random_seed(seed + get_rank())


def train(cfg, local_rank, distributed, logger):
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_detection_model(cfg).to(device)
    if cfg.MODEL.USE_SYNCBN:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)

    checkpointer = DetectronCheckpointer(
        cfg, model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=get_rank() == 0
    )
    if checkpointer.has_checkpoint():
        logger.info(
            "resuming from %s (OUTPUT_DIR/last_checkpoint); MODEL.WEIGHT %r is not used",
            checkpointer.get_checkpoint_file(),
            cfg.MODEL.WEIGHT,
        )
    else:
        logger.info("initialising from MODEL.WEIGHT %r", cfg.MODEL.WEIGHT)
    arguments = {"iteration": 0}
    arguments.update(checkpointer.load(cfg.MODEL.WEIGHT, use_latest=True))

    data_loader = make_data_loader(
        cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"]
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
    )
    return model


def main():
    parser = argparse.ArgumentParser(description="atss_core training")
    parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not evaluate after training")
    add_launch_arguments(parser)
    args = parser.parse_args()

    local_rank = local_rank_of(args)
    warnings = load_config(cfg, args.config_file, args.opts)
    distributed = init_distributed(local_rank, cfg.MODEL.DEVICE)

    if get_rank() == 0:
        mkdir(cfg.OUTPUT_DIR)
    logger = setup_logger("atss_core", cfg.OUTPUT_DIR, get_rank())
    for warning in warnings:
        logger.warning(warning)
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

    seed_everything(cfg.SEED, logger)
    model = train(cfg, local_rank, distributed, logger)
    if not args.skip_test:
        run_test(cfg, model, distributed)


if __name__ == "__main__":
    main()
