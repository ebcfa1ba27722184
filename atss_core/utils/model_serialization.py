"""Loading state dicts by longest-suffix key matching (framework §4.3), and ImageNet backbone conversion."""
import logging
import re
from collections import OrderedDict
from typing import NamedTuple

logger = logging.getLogger(__name__)


class LoadReport(NamedTuple):
    """Outcome of :func:`align_and_update_state_dicts`.

    matched: model key -> loaded key it took its value from.
    unmatched_model: model keys that kept their value (sorted; "missing").
    unused_loaded: loaded keys that no model key took (sorted; "unexpected").
    skipped: "model key [shape] <- loaded key [shape]" of matches dropped for
        their shape (only with ``skip_mismatched``); their model keys are also
        in ``unmatched_model``, their loaded keys in ``unused_loaded``.
    """

    matched: dict
    unmatched_model: list
    unused_loaded: list
    skipped: list


def strip_prefix_if_present(state_dict, prefix):
    """Remove ``prefix`` from every key, but only if **all** keys start with it (DDP's ``module.``)."""
    if not state_dict or not all(k.startswith(prefix) for k in state_dict):
        return state_dict
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())


def match_keys_by_suffix(model_keys, loaded_keys):
    """Map each model key to the longest loaded key it ends with (plain ``endswith``, not segment-aware).

    Example: loaded {conv1.weight, layer1.0.conv1.weight} gives
    ``body.stem.conv1.weight <- conv1.weight`` and
    ``body.layer1.0.conv1.weight <- layer1.0.conv1.weight``.
    Returns {model key: loaded key} for the model keys with a match.
    """
    loaded = set(loaded_keys)
    matched = {}
    for key in model_keys:
        # Scanning suffixes from the longest costs O(len(key)) set look-ups
        # instead of O(len(loaded_keys)) endswith calls per key.
        for start in range(len(key)):
            if key[start:] in loaded:
                matched[key] = key[start:]
                break
    return matched


def _group_counts(keys, depth=2):
    counts = OrderedDict()
    for key in keys:
        group = ".".join(key.split(".")[:depth])
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in counts.items())


def align_and_update_state_dicts(model_state_dict, loaded_state_dict, skip_mismatched=False):
    """Copy loaded tensors into ``model_state_dict`` (in place) by longest-suffix match.

    Model keys without a match keep their value. A shape mismatch raises a
    ValueError listing every offending pair with both shapes, unless
    ``skip_mismatched`` (fine-tuning, e.g. another class count): then those
    keys keep their value and are reported. Matches are logged at debug level
    and a summary at info level (warning for skipped keys).
    Returns a :class:`LoadReport`.
    """
    matched = match_keys_by_suffix(sorted(model_state_dict), loaded_state_dict.keys())
    bad = [
        f"{key} {tuple(model_state_dict[key].shape)} <- {src} {tuple(loaded_state_dict[src].shape)}"
        for key, src in matched.items()
        if tuple(model_state_dict[key].shape) != tuple(loaded_state_dict[src].shape)
    ]
    if bad and skip_mismatched:
        matched = {k: src for k, src in matched.items() if model_state_dict[k].shape == loaded_state_dict[src].shape}
        logger.warning(
            "skipped %d checkpoint tensors whose shape does not fit the model:\n  %s", len(bad), "\n  ".join(bad)
        )
    elif bad:
        raise ValueError(
            "checkpoint tensors do not fit the model (model key [shape] <- checkpoint key [shape]); check that "
            "the config (depth, groups, DCN stages, number of classes) matches the weights:\n  " + "\n  ".join(bad)
        )
    for key, src in matched.items():
        model_state_dict[key] = loaded_state_dict[src]
        logger.debug("%s loaded from %s of shape %s", key, src, tuple(loaded_state_dict[src].shape))
    used = set(matched.values())
    report = LoadReport(
        matched=matched,
        unmatched_model=sorted(k for k in model_state_dict if k not in matched),
        unused_loaded=sorted(k for k in loaded_state_dict if k not in used),
        skipped=bad,
    )
    logger.info("loaded %d of %d model tensors", len(matched), len(model_state_dict))
    if report.unmatched_model:
        logger.info("missing: model tensors left at their initial value: %s", _group_counts(report.unmatched_model))
        logger.debug("missing model keys: %s", report.unmatched_model)
    if report.unused_loaded:
        logger.info("unexpected: checkpoint tensors not used: %s", _group_counts(report.unused_loaded, depth=1))
        logger.debug("unexpected checkpoint keys: %s", report.unused_loaded)
    return report


def load_state_dict(model, loaded_state_dict, skip_mismatched=False):
    """Load by suffix matching into ``model`` (strips a ``module.`` prefix first). Returns a LoadReport."""
    model_state_dict = model.state_dict()
    loaded_state_dict = strip_prefix_if_present(loaded_state_dict, prefix="module.")
    report = align_and_update_state_dicts(model_state_dict, loaded_state_dict, skip_mismatched)
    model.load_state_dict(model_state_dict)
    return report


_DCN_CONV2 = re.compile(r"^(.*\blayer(\d+)\.\d+\.conv2)\.(weight|bias)$")


def rename_dcn_conv2(state_dict, stage_with_dcn):
    """``layer{i}.{b}.conv2.{weight,bias}`` -> ``conv2.conv.*`` for stages i with DCN (framework §4.4-6).

    Idempotent: already renamed keys no longer match.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        m = _DCN_CONV2.match(key)
        if m and 1 <= int(m.group(2)) <= len(stage_with_dcn) and stage_with_dcn[int(m.group(2)) - 1]:
            key = f"{m.group(1)}.conv.{m.group(3)}"
        out[key] = value
    return out


def convert_imagenet_backbone(state_dict, stage_with_dcn, eps_fold=0.0):
    """Prepare an ImageNet ResNet state dict for suffix loading (checkpoints.md §3.2-3.4).

    Input: torchvision-style names (torchvision, open-mmlab, renamed Caffe2).
    Drops ``num_batches_tracked`` and the classifier (``fc.*``, ``fc1000.*``);
    moves the stem's ``conv1``/``bn1`` under ``stem.`` (left bare, they would
    suffix-match any block ``conv1``/``bn1`` the file lacks, e.g. when the
    depth differs); renames DCN-stage ``conv2`` weights; adds ``eps_fold`` to
    every ``running_var`` so that our BN (eps ``MODEL.RESNETS.BN_EPS``)
    reproduces the source's (eps 1e-5): pass ``1e-5 - BN_EPS`` for ``.pth``
    sources and 0 for Caffe2 ``.pkl`` ones (AffineChannel has no eps).
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.split(".")[0] in ("fc", "fc1000"):
            continue
        if eps_fold and key.endswith("running_var"):
            value = value + eps_fold
        if key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        out[key] = value
    return rename_dcn_conv2(out, stage_with_dcn)
