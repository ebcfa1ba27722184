"""Saving and loading model/solver state (framework §3.6 "Checkpoint file", §4.1; checkpoints.md §3.7).

Save writes ``<save_dir>/<name>.pth`` = {"model", "optimizer", "scheduler",
"scaler", **extra} atomically, then ``<save_dir>/last_checkpoint`` (its path).

Two ways in: :meth:`Checkpointer.resume` continues a run (model, optimizer,
scheduler and AMP scaler; every tensor must fit), :meth:`Checkpointer.load_weights`
initialises from ``MODEL.WEIGHT`` (model only; tensors of another shape,
e.g. the classifier of another class count, are skipped and reported).

Both resolve a weight URI (:func:`~atss_core.utils.model_zoo.resolve_weight_uri`),
reads ``.pkl`` as Caffe2 and anything else with ``torch.load(weights_only=True)``,
unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` / a bare state dict, strips
DDP's ``module.`` and loads by longest-suffix matching. ImageNet backbone
files are converted first (classifier and BN counters dropped, DCN ``conv2``
renamed, BN eps folded for ``.pth``). It fails loudly where the original was
silent: nothing matched, an ImageNet file left backbone tensors unloaded, or
a tensor has the wrong shape.
"""
import logging
import os
import re
import tempfile
from collections.abc import Mapping

import torch
from torch import nn

from .c2_model_loading import load_c2_format
from .comm import is_main_process
from .model_serialization import convert_imagenet_backbone, load_state_dict, strip_prefix_if_present
from .model_zoo import resolve_weight_uri

logger = logging.getLogger(__name__)

# nn.BatchNorm2d's eps, which every .pth ImageNet source was trained with.
_SOURCE_BN_EPS = 1e-5
# Training state saved next to the model; restored only when resuming.
_SOLVER_STATES = ("optimizer", "scheduler", "scaler")
_BODY_KEY = re.compile(r"(^|\.)body\.")


def _unwrap(model):
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _atomic_write(path, write):
    """Call ``write(file)`` on a temp file next to ``path``, then rename it over ``path``.

    A crash or exception leaves any previous ``path`` untouched and no temp file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _split_container(data, path):
    """(state dict, extra entries) of a loaded file.

    Extra entries (iteration, optimizer, ...) are kept only for our own
    ``{"model": ...}`` files; a foreign ``{"state_dict": ..., "meta": ...}``
    file's solver state and metadata do not belong to this training run.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict, got {type(data).__name__}")
    if isinstance(data.get("model"), Mapping):
        extra = dict(data)
        return extra.pop("model"), extra
    if isinstance(data.get("state_dict"), Mapping):
        return data["state_dict"], {}
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data, {}
    raise ValueError(
        f"{path}: no 'model' or 'state_dict' entry and not a plain state dict; top-level keys: {sorted(data)[:10]}"
    )


def _detect_format(state_dict):
    """'native' (our names), 'mmdet' (an mmdetection detector), 'imagenet' (a bare ResNet) or 'other'."""
    keys = list(state_dict)
    if any(k.startswith(("backbone.body.", "backbone.fpn.", "rpn.")) for k in keys):
        return "native"
    if any(k.startswith(("neck.", "bbox_head.")) for k in keys):
        return "mmdet"
    if "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in keys):
        return "imagenet"
    return "other"


class Checkpointer:
    """Saves and restores the model, optimizer, scheduler and AMP grad scaler.

    Args:
        model: the detector (a DDP/DataParallel wrapper is unwrapped).
        optimizer, scheduler, scaler: saved and resumed when given
            (``scaler``: the ``torch.amp.GradScaler`` of float16 training).
        save_dir: where checkpoints and ``last_checkpoint`` go; "" disables saving.
        save_to_disk: default: only the main process saves.
        stage_with_dcn: ``MODEL.RESNETS.STAGE_WITH_DCN``, for renaming
            ImageNet ``conv2`` weights of deformable stages.
        bn_eps: ``MODEL.RESNETS.BN_EPS``; ``.pth`` ImageNet sources get
            ``running_var += 1e-5 - bn_eps`` (checkpoints.md §3.3).
        paths_catalog: the ``PATHS_CATALOG`` file for ``catalog://`` names.
    """

    def __init__(
        self, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None,
        stage_with_dcn=(False, False, False, False), bn_eps=0.0, paths_catalog=None, scaler=None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.save_dir = save_dir
        self.save_to_disk = is_main_process() if save_to_disk is None else save_to_disk
        self.stage_with_dcn = tuple(stage_with_dcn)
        self.bn_eps = bn_eps
        self.paths_catalog = paths_catalog

    def _solver_parts(self):
        return {name: getattr(self, name) for name in _SOLVER_STATES if getattr(self, name) is not None}

    # ------------------------------------------------------------------ save
    def save(self, name, **kwargs):
        """Write ``<save_dir>/<name>.pth`` with the model, solver state and ``kwargs`` (e.g. iteration)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": _unwrap(self.model).state_dict()}
        data.update({part: obj.state_dict() for part, obj in self._solver_parts().items()})
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        path = os.path.join(self.save_dir, f"{name}.pth")
        logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(path)

    def tag_last_checkpoint(self, path):
        _atomic_write(self._last_checkpoint_file(), lambda f: f.write(path.encode()))

    # ------------------------------------------------------------------ load
    def _last_checkpoint_file(self):
        return os.path.join(self.save_dir, "last_checkpoint")

    def has_checkpoint(self):
        return bool(self.save_dir) and os.path.exists(self._last_checkpoint_file())

    def get_checkpoint_file(self):
        """The path named in ``last_checkpoint`` ("" if there is none).

        If the output folder was moved, the same file name inside ``save_dir`` is used.
        """
        if not self.has_checkpoint():
            return ""
        with open(self._last_checkpoint_file()) as f:
            path = f.read().strip()
        moved = os.path.join(self.save_dir, os.path.basename(path))
        return path if os.path.exists(path) or not os.path.exists(moved) else moved

    def load(self, f=None, use_latest=True):
        """:meth:`resume` if ``use_latest`` and ``<save_dir>/last_checkpoint`` exist, else :meth:`load_weights`.

        Every loaded tensor must fit the model. The tools that only evaluate
        (test_net, the demo) pass ``use_latest=False``.
        """
        if use_latest and self.has_checkpoint():
            return self.resume()
        return self.load_weights(f, skip_mismatched=False)

    def resume(self, f=None):
        """Continue a run from ``f`` (default: the file named in ``last_checkpoint``).

        Restores the model (every tensor must fit), optimizer, scheduler and
        scaler. Returns the file's other entries (``iteration``, RNG states,
        sampler position, ...).
        """
        f = f or self.get_checkpoint_file()
        if not f:
            raise FileNotFoundError(f"nothing to resume: {self._last_checkpoint_file()} does not exist")
        logger.info("Resuming from %s", f)
        state_dict, extra, is_c2 = self._load_file(f)
        self._load_model(state_dict, is_c2, f)
        parts = self._solver_parts()
        for name in _SOLVER_STATES:
            state = extra.pop(name, None)
            if name not in parts:
                continue
            if state is None:
                logger.warning("%s holds no %s state: it starts afresh", f, name)
            else:
                parts[name].load_state_dict(state)
        return extra

    def load_weights(self, f, skip_mismatched=True):
        """Initialise the model from ``f`` (``MODEL.WEIGHT``); this is not a resume.

        With ``skip_mismatched``, tensors whose shape differs from the model's
        (e.g. the classifier when fine-tuning to another class count) are
        skipped, else they raise; missing, unexpected and skipped keys are
        reported. Solver state in the file is not used.
        Returns the file's other entries (e.g. ``categories``), or {} for an
        empty ``f``.
        """
        if not f:
            logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        logger.info("Initialising the model from %s", f)
        state_dict, extra, is_c2 = self._load_file(f)
        self._load_model(state_dict, is_c2, f, skip_mismatched)
        ignored = [name for name in _SOLVER_STATES if extra.pop(name, None) is not None]
        if ignored:
            logger.info("%s also holds %s state: not used when initialising (resuming uses OUTPUT_DIR)", f,
                        "/".join(ignored))
        return extra

    def _load_file(self, f):
        """(state dict, extra entries, is Caffe2) of a weight URI."""
        path = resolve_weight_uri(f, self.paths_catalog)
        if path.endswith(".pkl"):
            return load_c2_format(path, self.stage_with_dcn)["model"], {}, True
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f"could not read {path} with torch.load(weights_only=True): {e}. Checkpoints must hold only "
                "tensors and plain Python containers; re-save an old file from a trusted source that way"
            ) from e
        state_dict, extra = _split_container(data, path)
        return state_dict, extra, False

    def _load_model(self, state_dict, is_c2, source, skip_mismatched=False):
        state_dict = strip_prefix_if_present(state_dict, "module.")
        fmt = _detect_format(state_dict)
        if fmt == "mmdet":
            raise ValueError(
                f"{source} is an mmdetection detector checkpoint (keys backbone./neck./bbox_head.); it needs a "
                "key conversion before it can be loaded: python tools/convert_checkpoint.py IN.pth OUT.pth, then use "
                "OUT.pth with the config overrides it prints"
            )
        if fmt == "imagenet":
            eps_fold = 0.0 if is_c2 else max(0.0, _SOURCE_BN_EPS - self.bn_eps)
            state_dict = convert_imagenet_backbone(state_dict, self.stage_with_dcn, eps_fold)
        report = load_state_dict(_unwrap(self.model), state_dict, skip_mismatched)
        if not report.matched:
            model_keys = list(_unwrap(self.model).state_dict())
            raise RuntimeError(
                f"no tensor of {source} matches the model: checkpoint keys start {list(state_dict)[:5]}, "
                f"model keys start {model_keys[:5]}; tensors of the wrong shape: {report.skipped[:5]}"
            )
        if fmt == "imagenet":
            self._check_body_loaded(report, is_c2, source)

    @staticmethod
    def _check_body_loaded(report, is_c2, source):
        """Every body tensor but DCN offsets (and, for Caffe2, BN statistics) must come from an ImageNet file."""
        body = [k for k in report.unmatched_model if _BODY_KEY.search(k)]
        missing = [
            k
            for k in body
            if ".offset." not in k and not (is_c2 and k.endswith(("running_mean", "running_var")))
        ]
        if missing:
            raise RuntimeError(
                f"{source} left {len(missing)} backbone tensors without a value, e.g. {missing[:5]}; check "
                "MODEL.BACKBONE.CONV_BODY and MODEL.RESNETS.* (depth, groups, GN, DCN stages) against the weights"
            )


class DetectronCheckpointer(Checkpointer):
    """:class:`Checkpointer` configured from ``cfg`` (DCN stages, BN eps, paths catalog)."""

    def __init__(self, cfg, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None, scaler=None):
        super().__init__(
            model,
            optimizer,
            scheduler,
            save_dir,
            save_to_disk,
            stage_with_dcn=cfg.MODEL.RESNETS.STAGE_WITH_DCN,
            bn_eps=cfg.MODEL.RESNETS.BN_EPS,
            paths_catalog=cfg.PATHS_CATALOG,
            scaler=scaler,
        )
