from .defaults import _C as cfg

__all__ = ["cfg", "resolve_box_offset", "HEAD_FLAGS"]

# Head selection flags (spec C1), in the original's dispatch priority.
HEAD_FLAGS = ("ATSS_ON", "DYNAMIC_ATSS_ON", "FCOS_ON", "RETINANET_ON", "DSLA_ON", "DW_ON", "O2F_ON")
# Heads of the maskrcnn-benchmark lineage use the +1 pixel convention.
_PLUS_ONE_HEADS = ("ATSS_ON", "DYNAMIC_ATSS_ON", "FCOS_ON", "RETINANET_ON")


def resolve_box_offset(cfg):
    """The +1 pixel convention (0 or 1) that framework box ops use (spec C4).

    ``MODEL.BOX_OFFSET`` = -1 means auto: 1 for the ATSS family, 0 for the
    mmdetection family (DSLA, DW, O2F).
    """
    offset = cfg.MODEL.BOX_OFFSET
    if offset == -1:
        return int(any(cfg.MODEL[f] for f in _PLUS_ONE_HEADS))
    if offset not in (0, 1):
        raise ValueError(f"MODEL.BOX_OFFSET must be -1 (auto), 0 or 1, got {offset!r}")
    return int(offset)
