"""Loss functions of the dense heads: shared box losses plus one function per method."""
from .atss import atss_loss, centerness_targets
from .giou import giou_loss

__all__ = ["atss_loss", "centerness_targets", "giou_loss"]
