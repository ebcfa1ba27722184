"""Dense detection heads, selected by the one ``MODEL.<HEAD>_ON`` flag that is True (spec C1)."""
from atss_core.config import HEAD_FLAGS
from atss_core.utils.registry import Registry

# Config flag name -> builder(cfg, in_channels) -> DenseHead.
DENSE_HEADS = Registry("dense head")


def build_dense_head(cfg, in_channels):
    """Build the head whose ``MODEL.<HEAD>_ON`` flag is set; exactly one must be."""
    enabled = [flag for flag in HEAD_FLAGS if cfg.MODEL[flag]]
    if len(enabled) != 1:
        flags = ", ".join(f"MODEL.{f}" for f in HEAD_FLAGS)
        raise ValueError(f"exactly one of {flags} must be True, got {enabled or 'none'}")
    return DENSE_HEADS[enabled[0]](cfg, in_channels)


def _register_all():
    """Import every method module of this package; each registers its builder.

    Adding a head is adding a file (plus a config), not editing this one.
    """
    import importlib
    import pkgutil

    shared = {"tower", "dense_head", "postprocess"}
    for info in pkgutil.iter_modules(__path__):
        if info.name not in shared:
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()

__all__ = ["DENSE_HEADS", "build_dense_head"]
