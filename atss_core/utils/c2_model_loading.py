"""Caffe2/Detectron ImageNet ``.pkl`` weights -> torchvision-style ResNet names (framework §4.4, checkpoints.md §3.1)."""
import logging
import pickle
from collections import OrderedDict

import torch

from .model_serialization import rename_dcn_conv2

logger = logging.getLogger(__name__)

# Plain substring replacements applied in this order to every blob name.
# The order matters: ".b" -> ".bias" also turns ".branch" into ".biasranch",
# which a later rule repairs.
_C2_RENAMES = (
    ("_", "."),
    (".w", ".weight"),
    (".bn", "_bn"),
    (".b", ".bias"),
    ("_bn.s", "_bn.scale"),
    (".biasranch", ".branch"),
    ("res.conv1_", "conv1_"),
    ("_bn.scale", "_bn.weight"),
    ("conv1_bn.", "bn1."),
    ("res2.", "layer1."),
    ("res3.", "layer2."),
    ("res4.", "layer3."),
    ("res5.", "layer4."),
    (".branch2a.", ".conv1."),
    (".branch2a_bn.", ".bn1."),
    (".branch2b.", ".conv2."),
    (".branch2b_bn.", ".bn2."),
    (".branch2c.", ".conv3."),
    (".branch2c_bn.", ".bn3."),
    (".branch1.", ".downsample.0."),
    (".branch1_bn.", ".downsample.1."),
    # GroupNorm variants (R-50-GN etc.).
    ("conv1.gn.s", "bn1.weight"),
    ("conv1.gn.bias", "bn1.bias"),
    ("conv2.gn.s", "bn2.weight"),
    ("conv2.gn.bias", "bn2.bias"),
    ("conv3.gn.s", "bn3.weight"),
    ("conv3.gn.bias", "bn3.bias"),
    ("downsample.0.gn.s", "downsample.1.weight"),
    ("downsample.0.gn.bias", "downsample.1.bias"),
)


def rename_c2_key(name):
    """One C2 blob name -> our name, e.g. ``res2_0_branch2a_bn_b`` -> ``layer1.0.bn1.bias``.

    ``pred_{w,b}`` (FB ResNeXt classifier) become ``fc1000.{weight,bias}``.
    """
    if name in ("pred_w", "pred_b"):
        name = "fc1000" + name[len("pred"):]
    for old, new in _C2_RENAMES:
        name = name.replace(old, new)
    return name


def rename_c2_weights(blobs, stage_with_dcn=(False, False, False, False)):
    """C2 blob dict (numpy arrays) -> OrderedDict of tensors under our names.

    Optimizer blobs (``*_momentum``) and ``weight_order`` are skipped; DCN
    stages get ``conv2.conv.*`` names. BN blobs are AffineChannel scale/shift
    only, so ``running_mean``/``running_var`` keep the model's 0/1.
    """
    out = OrderedDict()
    for name in sorted(blobs):
        if "_momentum" in name or "weight_order" in name:
            continue
        out[rename_c2_key(name)] = torch.tensor(blobs[name])  # a copy: pickled arrays may be read-only
    return rename_dcn_conv2(out, stage_with_dcn)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays and plain containers.

    A pickle can run arbitrary code; C2 weight files only need these globals.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a weights pickle (only numpy arrays are allowed)"
            )
        return super().find_class(module, name)


def load_c2_pickle(path):
    """The blob dict of a C2 ``.pkl`` (``data["blobs"]`` if present, else ``data``)."""
    with open(path, "rb") as f:
        data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of blobs in the Caffe2 pickle, got {type(data).__name__}")
    return data.get("blobs", data)


def load_c2_format(path, stage_with_dcn=(False, False, False, False)):
    """Load a Caffe2 ImageNet ``.pkl`` as ``{"model": state_dict}`` with our backbone names."""
    state_dict = rename_c2_weights(load_c2_pickle(path), stage_with_dcn)
    logger.info("converted %d Caffe2 blobs from %s", len(state_dict), path)
    return {"model": state_dict}
