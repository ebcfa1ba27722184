"""Loads the compiled op library ``atss_core._C`` and says what it provides.

Importing ``atss_core._C`` registers ``torch.ops.atss_core.*`` (schemas in
``csrc/ops.cpp``, kernels per device). The library is optional: the wrappers in
this package ask :func:`compiled_op` for a kernel and use their pure-PyTorch
reference when it answers None, so ``import atss_core`` works without a build.
"""
import functools
import importlib
import logging
import warnings

import torch

logger = logging.getLogger(__name__)

REBUILD_HINT = "rebuild it with `pip install -e . --no-build-isolation` in the atss_core checkout"

# How the dynamic loader reports a library linked against another libtorch.
_ABI_MISMATCH_MARKERS = ("undefined symbol", "Symbol not found", "DLL load failed", "procedure could not be found")

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def _load_extension():
    """Returns (module or None, load error message or None)."""
    try:
        # Not `from atss_core import _C`: that reports a missing module as a
        # generic "cannot import name" ImportError.
        return importlib.import_module("atss_core._C"), None
    except ImportError as e:
        message = str(e)
        if isinstance(e, ModuleNotFoundError) and e.name == "atss_core._C":
            logger.debug("atss_core._C is not built; ops use their pure-PyTorch references")
            return None, message
        if any(marker in message for marker in _ABI_MISMATCH_MARKERS):
            problem = f"was built against a different torch than the installed {torch.__version__}"
        else:
            problem = "failed to load"
        warnings.warn(
            f"atss_core._C {problem} ({message}); {REBUILD_HINT}. Falling back to the slower pure-PyTorch ops.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None, message


_C, _LOAD_ERROR = _load_extension()


def extension_info():
    """How ``atss_core._C`` was built, or why it is not loaded.

    Returns a dict: ``available`` (bool), ``cuda`` (built with CUDA kernels),
    ``cuda_version`` (int such as 13000, or None), ``built_with_torch`` (torch
    version of the headers it was compiled against), ``torch`` (the running
    torch), ``path`` (the loaded file) and ``error`` (load error or None).
    """
    return {
        "available": _C is not None,
        "cuda": bool(getattr(_C, "WITH_CUDA", False)),
        "cuda_version": getattr(_C, "CUDA_VERSION", None),
        "built_with_torch": getattr(_C, "TORCH_VERSION", None),
        "torch": torch.__version__,
        "path": getattr(_C, "__file__", None),
        "error": _LOAD_ERROR,
    }


@functools.lru_cache(maxsize=None)
def _has_kernel(name, device_type):
    key = _DISPATCH_KEYS.get(device_type)
    # An op missing from the library (an older build) has no kernel anywhere.
    if _C is None or key is None or not hasattr(torch.ops.atss_core, name):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"atss_core::{name}", key)


def compiled_op(name, device):
    """``torch.ops.atss_core.<name>`` if the loaded library has a kernel for
    ``device`` (a torch.device), else None (no build, or e.g. a CPU-only build
    asked for CUDA)."""
    if not _has_kernel(name, device.type):
        return None
    return getattr(torch.ops.atss_core, name)


def _dynamic_index_vector(boxes):
    # The number of kept boxes is data-dependent.
    n_kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n_kept,), dtype=torch.long)


def _check_nms_shapes(boxes, scores):
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: f"boxes must be [N, 4], got {tuple(boxes.shape)}")
    torch._check(
        scores.dim() == 1 and scores.shape[0] == boxes.shape[0],
        lambda: f"scores must be [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}",
    )


def _register_fake_kernels():
    """Shape functions for FakeTensor / torch.compile tracing of the compiled ops."""

    def register_fake(name):
        # An older build may lack an op; registering a fake for it would fail.
        if hasattr(torch.ops.atss_core, name):
            return torch.library.register_fake(f"atss_core::{name}")
        return lambda fn: fn

    @register_fake("nms")
    def _nms_fake(boxes, scores, iou_threshold, box_offset=1.0):
        _check_nms_shapes(boxes, scores)
        return _dynamic_index_vector(boxes)

    @register_fake("ml_nms")
    def _ml_nms_fake(boxes, scores, labels, iou_threshold, box_offset=1.0):
        _check_nms_shapes(boxes, scores)
        torch._check(
            labels.dim() == 1 and labels.shape[0] == boxes.shape[0],
            lambda: f"labels must be [N] with N = {boxes.shape[0]}, got {tuple(labels.shape)}",
        )
        return _dynamic_index_vector(boxes)


if _C is not None:
    _register_fake_kernels()
