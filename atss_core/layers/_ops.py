"""Loads the compiled op library ``atss_core._C`` and says what it provides.

Importing ``atss_core._C`` registers ``torch.ops.atss_core.*`` (schemas in
``csrc/ops.cpp``, kernels per device). The library is optional: the wrappers in
this package ask :func:`compiled_op` for a kernel and use their pure-PyTorch
reference when it answers None, so ``import atss_core`` works without a build.
"""
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
    ``cuda_version`` (int such as 13000, or None), ``cuda_arch_list`` (the
    TORCH_CUDA_ARCH_LIST it was compiled for, e.g. "8.0;9.0+PTX", or None),
    ``built_with_torch`` (torch version of the headers it was compiled
    against), ``torch`` (the running torch), ``path`` (the loaded file) and
    ``error`` (load error or None).
    """
    return {
        "available": _C is not None,
        "cuda": bool(getattr(_C, "WITH_CUDA", False)),
        "cuda_version": getattr(_C, "CUDA_VERSION", None),
        "cuda_arch_list": getattr(_C, "CUDA_ARCH_LIST", None),
        "built_with_torch": getattr(_C, "TORCH_VERSION", None),
        "torch": torch.__version__,
        "path": getattr(_C, "__file__", None),
        "error": _LOAD_ERROR,
    }


def _has_op(name):
    # An older build may lack an op: it has no kernel, and registering anything for it would fail.
    return hasattr(torch.ops.atss_core, name)


_KERNEL_CACHE = {}  # (op name, device type) -> bool


@torch.compiler.assume_constant_result  # torch.compile embeds the answer instead of tracing it
def _has_kernel(name, device_type):
    if (name, device_type) not in _KERNEL_CACHE:
        key = _DISPATCH_KEYS.get(device_type)
        _KERNEL_CACHE[name, device_type] = (
            _C is not None
            and key is not None
            and _has_op(name)
            and torch._C._dispatch_has_kernel_for_dispatch_key(f"atss_core::{name}", key)
        )
    return _KERNEL_CACHE[name, device_type]


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
        if _has_op(name):
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

    @register_fake("sigmoid_focal_loss")
    def _sigmoid_focal_loss_fake(logits, targets, gamma, alpha, reduction, with_grad):
        torch._check(logits.dim() == 2, lambda: f"logits must be [R, C], got {tuple(logits.shape)}")
        torch._check(
            targets.dim() == 1 and targets.shape[0] == logits.shape[0],
            lambda: f"targets must be [R] with R = {logits.shape[0]}, got {tuple(targets.shape)}",
        )
        loss_dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
        loss = logits.new_empty(() if reduction == "sum" else logits.shape, dtype=loss_dtype)
        grad = torch.empty_like(logits) if with_grad else logits.new_empty((0,))
        return loss, grad


def _register_autocast():
    """NMS kernels take float32/float64 (maskrcnn-benchmark wrapped them in apex's
    float_function): under autocast, half boxes and scores are upcast. The focal
    loss kernel reads float16/bfloat16 itself and needs no rule."""
    for name in ("nms", "ml_nms"):
        if _has_op(name):
            for device_type in ("cpu", "cuda"):
                torch.library.register_autocast(f"atss_core::{name}", device_type, torch.float32)


def _focal_setup_context(ctx, inputs, output):
    logits, targets, gamma, alpha, _reduction, with_grad = inputs
    local_grad = output[1]  # d loss_element / d logits, from the forward pass
    ctx.mark_non_differentiable(local_grad)
    ctx.gamma, ctx.alpha = gamma, alpha
    # A direct call with with_grad=False has no local gradient; the backward
    # then recomputes it (the wrappers never take that path).
    ctx.save_for_backward(*((local_grad,) if with_grad else (logits, targets)))


def _focal_backward(ctx, grad_loss, _grad_local_grad):
    if torch.is_grad_enabled():
        # create_graph=True: the saved derivative is a constant here, so a second
        # derivative through it would silently be zero.
        raise RuntimeError(
            "atss_core::sigmoid_focal_loss supports first derivatives only (create_graph=True was "
            "requested); use atss_core.layers.sigmoid_focal_loss.sigmoid_focal_loss_reference for higher orders"
        )
    if len(ctx.saved_tensors) == 1:
        (local_grad,) = ctx.saved_tensors
    else:
        logits, targets = ctx.saved_tensors
        _, local_grad = torch.ops.atss_core.sigmoid_focal_loss(logits, targets, ctx.gamma, ctx.alpha, "none", True)
    # A scalar grad_loss (reduction "sum") broadcasts over [R, C].
    return (local_grad * grad_loss).to(local_grad.dtype), None, None, None, None, None


def _register_autograd():
    if _has_op("sigmoid_focal_loss"):
        torch.library.register_autograd(
            "atss_core::sigmoid_focal_loss", _focal_backward, setup_context=_focal_setup_context
        )


if _C is not None:
    _register_fake_kernels()
    _register_autocast()
    _register_autograd()
