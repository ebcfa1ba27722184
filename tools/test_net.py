#!/usr/bin/env python
"""Evaluate MODEL.WEIGHT on DATASETS.TEST (framework spec 7.3).

python tools/test_net.py --config-file F MODEL.WEIGHT model_final.pth [KEY VALUE ...]
(or under torchrun: each process evaluates its shard, rank 0 scores.)
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atss_core.config import cfg  # noqa: E402
from atss_core.engine.inference import run_test  # noqa: E402
from atss_core.modeling.detector import build_detection_model  # noqa: E402
from atss_core.utils.checkpoint import DetectronCheckpointer  # noqa: E402
from atss_core.utils.collect_env import collect_env_info  # noqa: E402
from atss_core.utils.comm import get_rank, get_world_size  # noqa: E402
from atss_core.utils.logger import setup_logger  # noqa: E402
from atss_core.utils.miscellaneous import (  # noqa: E402
    add_launch_arguments,
    init_distributed,
    load_config,
    local_rank_of,
)


def main():
    parser = argparse.ArgumentParser(description="atss_core inference and COCO evaluation")
    add_launch_arguments(parser)
    args = parser.parse_args()

    warnings = load_config(cfg, args.config_file, args.opts)
    distributed = init_distributed(local_rank_of(args), cfg.MODEL.DEVICE)

    logger = setup_logger("atss_core", "", get_rank())
    for warning in warnings:
        logger.warning(warning)
    logger.info("Using %d processes", get_world_size())
    logger.info(cfg)
    logger.info("Collecting env info (might take some time)\n%s", collect_env_info())

    model = build_detection_model(cfg).to(torch.device(cfg.MODEL.DEVICE))
    if not cfg.MODEL.WEIGHT:
        logger.warning("MODEL.WEIGHT is empty: evaluating a randomly initialised model")
    # use_latest=False: a stale OUTPUT_DIR/last_checkpoint never replaces MODEL.WEIGHT.
    DetectronCheckpointer(cfg, model, save_dir=cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHT, use_latest=False)
    run_test(cfg, model, distributed)


if __name__ == "__main__":
    main()
