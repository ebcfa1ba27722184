"""Config checks that name the offending key (issue 3, "bad input").

yacs alone reports an unknown key as ``Non-existent config key: X`` and a
wrong type as ``Type mismatch (<class 'int'> vs. <class 'str'>) ...``. The
merges here check every incoming key first and say which key, which value,
what was expected and where it came from, with the nearest valid key for a
typo. The type rule is yacs's own: same type, ``None`` on either side, or
list <-> tuple (so an int is not accepted for a float key, as in yacs).
"""
import ast
import difflib

import yaml
from yacs.config import CfgNode

from . import HEAD_FLAGS

# Dynamic ATSS reads the ATSS keys (spec C1); every other head has MODEL.<NAME>.
_SHARED_NAMESPACE = {"DYNAMIC_ATSS_ON": "ATSS"}


class UnknownConfigKeyError(KeyError):
    """A key that the defaults do not define (``str`` is the plain message)."""

    def __str__(self):
        return str(self.args[0])


def config_keys(node, prefix=""):
    """Every dotted key of ``node``: groups and leaves."""
    keys = []
    for name, value in node.items():
        key = prefix + name
        keys.append(key)
        if isinstance(value, CfgNode):
            keys.extend(config_keys(value, key + "."))
    return keys


def nearest_key(cfg, key):
    """The valid key closest to ``key`` (difflib), or None."""
    matches = difflib.get_close_matches(key, config_keys(cfg), n=1, cutoff=0.6)
    return matches[0] if matches else None


def decode_value(value):
    """A value as yacs decodes it: strings are Python literals where they parse."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _types_compatible(default, value):
    if type(default) is type(value) or default is None or value is None:
        return True
    return {type(default), type(value)} == {list, tuple}


def check_override(cfg, key, value, source):
    """Raise if ``key`` is not a config key or ``value`` has the wrong type for it.

    Args:
        key: dotted key, e.g. "MODEL.ATSS.TOPK"; value: raw (string) or decoded.
        source: where the pair came from, for the message (a file, "the command line").
    """
    if cfg.key_is_deprecated(key):
        return
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            hint = nearest_key(cfg, key)
            suggestion = f"; did you mean {hint!r}?" if hint else "; see atss_core/config/defaults.py"
            raise UnknownConfigKeyError(f"unknown config key {key!r} in {source}{suggestion}")
        node = node[part]
    if isinstance(node, CfgNode):
        raise ValueError(f"{key!r} in {source} is a group of keys, not a value; set one of {sorted(node)}")
    decoded = decode_value(value)
    if not _types_compatible(node, decoded):
        hint = f" (write {float(decoded)!r})" if isinstance(node, float) and type(decoded) is int else ""
        raise ValueError(
            f"config key {key!r} in {source} expects type {type(node).__name__} (default {node!r}), "
            f"got {type(decoded).__name__} {decoded!r}{hint}"
        )


def _flatten(mapping, prefix=""):
    """(dotted key, value) pairs of the leaves of a nested dict."""
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def merge_from_file(cfg, path):
    """``cfg.merge_from_file(path)`` after checking every key and value of the yaml file."""
    with open(path) as f:
        loaded = yaml.safe_load(f)
    if loaded is None:
        return
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys, got a {type(loaded).__name__}")
    for key, value in _flatten(loaded):
        check_override(cfg, key, value, path)
    cfg.merge_from_file(path)


def merge_from_list(cfg, opts):
    """``cfg.merge_from_list(opts)`` after checking every ``KEY VALUE`` pair."""
    for key, value in zip(opts[0::2], opts[1::2]):
        check_override(cfg, str(key), value, "the command line")
    cfg.merge_from_list(opts)


def head_namespace(cfg):
    """Name of the config group of the active head ("ATSS", "FCOS", ...), or None
    unless exactly one ``MODEL.<HEAD>_ON`` flag is set (the model builder reports that)."""
    enabled = [flag for flag in HEAD_FLAGS if cfg.MODEL[flag]]
    if len(enabled) != 1:
        return None
    return _SHARED_NAMESPACE.get(enabled[0], enabled[0][: -len("_ON")])


def check_num_classes(cfg, categories, dataset_name):
    """The active head's NUM_CLASSES must be the dataset's categories + 1 (background)."""
    namespace = head_namespace(cfg)
    if namespace is None or categories is None or "NUM_CLASSES" not in cfg.MODEL.get(namespace, {}):
        return
    num_classes = cfg.MODEL[namespace].NUM_CLASSES
    if num_classes != len(categories) + 1:
        shown = ", ".join(categories[:5]) + (", ..." if len(categories) > 5 else "")
        raise ValueError(
            f"MODEL.{namespace}.NUM_CLASSES is {num_classes} but dataset {dataset_name!r} has "
            f"{len(categories)} categories ({shown}); set MODEL.{namespace}.NUM_CLASSES "
            f"{len(categories) + 1} (categories + background)"
        )
