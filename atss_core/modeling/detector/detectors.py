"""``build_detection_model``: the single entry point from a cfg to a model."""
from .generalized_rcnn import GeneralizedRCNN

_META_ARCHITECTURES = {"GeneralizedRCNN": GeneralizedRCNN}


def build_detection_model(cfg):
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _META_ARCHITECTURES:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE '{name}' is unknown; expected one of {sorted(_META_ARCHITECTURES)}"
        )
    return _META_ARCHITECTURES[name].from_config(cfg)
