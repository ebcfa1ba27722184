"""Filesystem, seeding and command-line setup helpers shared by the tools."""
import argparse
import json
import os
import random
import re
import tempfile

import numpy as np
import torch

from atss_core.config import validation


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


def get_rng_states():
    """States of python ``random``, numpy, torch (CPU and every CUDA device).

    Plain containers and tensors only, so a checkpoint holding them still
    loads with ``torch.load(weights_only=True)``.
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states):
    """Restore :func:`get_rng_states` output (CUDA states for the devices both runs have)."""
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = states["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
         np_state["has_gauss"], np_state["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def set_deterministic(enabled):
    """Deterministic kernels on (``DETERMINISTIC``) or back to the fast defaults.

    On: cuDNN without autotuning and ``torch.use_deterministic_algorithms``
    with ``warn_only`` (an op without a deterministic CUDA kernel, e.g. a
    deformable-conv backward, warns instead of stopping the run), and cuBLAS
    with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when CUDA starts).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


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
    """``--local_rank``, else env ``LOCAL_RANK`` (torchrun), else ``SLURM_LOCALID`` (srun), else 0."""
    if args.local_rank is not None:
        return args.local_rank
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def first_slurm_host(nodelist):
    """First host of a SLURM node list: ``gpu[003-005,7],cpu1`` -> ``gpu003``."""
    prefix, first_number = re.match(r"([^,\[]+)(?:\[([^,\-\]]+))?", nodelist).groups()
    return prefix + (first_number or "")


def slurm_env(environ):
    """env:// variables for a process started by ``srun`` (one task per GPU), or {} when not in an srun step.

    RANK = SLURM_PROCID, WORLD_SIZE = SLURM_STEP_NUM_TASKS, LOCAL_RANK =
    SLURM_LOCALID; MASTER_ADDR defaults to the first node of the step and
    MASTER_PORT to 29500. Variables already set (e.g. by torchrun) win.
    """
    if "WORLD_SIZE" in environ or int(environ.get("SLURM_STEP_NUM_TASKS", 1)) <= 1:
        return {}
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ["SLURM_JOB_NODELIST"]
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_slurm_host(nodelist),
        "MASTER_PORT": environ.get("MASTER_PORT", "29500"),
    }


def load_config(cfg, config_file, opts):
    """Merge ``config_file`` then ``opts`` into ``cfg`` and freeze it.

    An unknown key or a wrong-typed value raises an error that names the key,
    the value, the expected type and the nearest valid key (config.validation).

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
    validation.merge_from_file(cfg, config_file)
    validation.merge_from_list(cfg, opts)
    warnings = []
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        warnings.append(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available: running on cpu")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return warnings


def init_distributed(local_rank, device):
    """Join the process group when env WORLD_SIZE > 1 (torchrun, or srun via :func:`slurm_env`).

    NCCL on CUDA (after selecting GPU ``local_rank``), gloo on CPU. Returns
    whether the run is distributed.
    """
    os.environ.update(slurm_env(os.environ))
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
