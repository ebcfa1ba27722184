"""Filesystem, seeding and command-line setup helpers shared by the tools."""
import argparse
import json
import os
import random
import tempfile

import numpy as np
import torch


def mkdir(path):
    """``mkdir -p``; an empty path is a no-op."""
    if path:
        os.makedirs(path, exist_ok=True)


def atomic_write(path, write_fn, binary=False):
    """Write ``path`` through ``write_fn(file)`` into a temp file, then rename.

    A crash mid-write leaves any previous ``path`` intact (readers never see a
    half-written file).
    """
    directory = os.path.dirname(os.path.abspath(path))
    mkdir(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json(obj, path):
    atomic_write(path, lambda f: json.dump(obj, f))


def save_config(cfg, path):
    """Dump a yacs config as yaml (loadable with ``cfg.merge_from_file``)."""
    atomic_write(path, lambda f: f.write(cfg.dump()))


def unwrap_model(model):
    """The module inside a DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def set_random_seed(seed):
    """Seed python ``random``, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def draw_seed():
    """A fresh seed from the OS entropy pool (for ``SEED < 0``)."""
    return int.from_bytes(os.urandom(4), "little") >> 1


# --------------------------------------------------------------------------- #
# Command-line tool setup shared by tools/train_net.py and tools/test_net.py
# --------------------------------------------------------------------------- #
def add_launch_arguments(parser):
    """``--config-file``, ``--local_rank``/``--local-rank`` and trailing ``KEY VALUE`` opts."""
    parser.add_argument("--config-file", required=True, metavar="FILE", help="yacs config file")
    parser.add_argument(
        "--local_rank",
        "--local-rank",
        dest="local_rank",
        type=int,
        default=None,
        help="set by torch.distributed.launch; torchrun sets env LOCAL_RANK instead",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return parser


def local_rank_of(args):
    return args.local_rank if args.local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))


def load_config(cfg, config_file, opts):
    """Merge ``config_file`` then ``opts`` into ``cfg`` and freeze it.

    A CUDA ``MODEL.DEVICE`` on a machine without CUDA becomes "cpu"; the
    returned list holds that warning (log it once the logger exists).
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file: no such file {config_file!r}")
    flags = [o for o in opts[::2] if str(o).startswith("--")]
    if flags:
        raise ValueError(f"options {flags} must come before the KEY VALUE config overrides")
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got an odd number of items: {opts}")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    warnings = []
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        warnings.append(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available: running on cpu")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return warnings


def init_distributed(local_rank, device):
    """Join the process group when env WORLD_SIZE > 1 (torchrun); return whether distributed.

    NCCL on CUDA (after selecting GPU ``local_rank``), gloo on CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    from atss_core.utils.comm import synchronize

    on_cuda = str(device).startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if on_cuda else "gloo", init_method="env://")
    synchronize()
    return True
