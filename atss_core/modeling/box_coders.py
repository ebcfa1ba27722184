"""Box coders: gt boxes <-> regression targets relative to anchors.

``BoxCoder`` is the ATSS/Dynamic ATSS coder (sfzhang15/ATSS
``modeling/rpn/atss/atss.py`` ``BoxCoder``, atss_heads §4.1). Its centre is
the box midpoint ((x1 + x2) / 2) and its widths use the +1 convention. Its
BOX mode also serves RetinaNet: the maskrcnn-benchmark coder (§4.2) puts
centres at x1 + w/2, half a pixel further, but on the anchor and the box
alike, and decodes x2 as centre + w/2 - 1; the shifts cancel, so both encode
and decode are the same functions (tests/modeling/test_coders_fcos_retinanet.py).

``LTRBCoder`` is FCOS's: distances from a location to the box sides.
"""
import math
from typing import Sequence

import torch
from torch import Tensor

# Upper clamp of the decoded log-size ratio: no box grows beyond 1000/16 anchors.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _centre_size(boxes: Tensor):
    """(..., 4) xyxy -> cx, cy, w, h (each (...,)), widths with +1."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1 + 1, y2 - y1 + 1


class BoxCoder:
    """Encode/decode on tensors of shape (..., 4); anchors broadcast against the boxes.

    Args:
        mode: "BOX" (centre/size deltas) or "POINT" (distances l, t, r, b from
            the anchor centre, in units of anchor_size / point_scale).
        weights: (wx, wy, ww, wh) of the BOX deltas.
        scale_clamp: upper clamp of dw / ww and dh / wh before exp (BOX only).
        point_scale: ANCHOR_SIZES[0] / ANCHOR_STRIDES[0] in the original (8 for
            "8S" anchors, so a POINT target is a distance in strides).
    """

    MODES = ("BOX", "POINT")

    def __init__(
        self,
        mode: str = "BOX",
        weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
        point_scale: float = 8.0,
    ):
        if mode not in self.MODES:
            raise ValueError(f"box coder mode (MODEL.ATSS.REGRESSION_TYPE) must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp
        self.point_scale = float(point_scale)
        self.encode = self._encode_box if mode == "BOX" else self._encode_point
        self.decode = self._decode_box if mode == "BOX" else self._decode_point

    def _encode_box(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """gt_boxes, anchors (..., 4) -> (dx, dy, dw, dh) (..., 4)."""
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = _centre_size(anchors)
        gcx, gcy, gw, gh = _centre_size(gt_boxes)
        return torch.stack(
            (wx * (gcx - acx) / aw, wy * (gcy - acy) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1
        )

    def _decode_box(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """deltas, anchors (..., 4) -> xyxy boxes (..., 4) in deltas' dtype."""
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = _centre_size(anchors.to(deltas.dtype))
        dx, dy, dw, dh = deltas.unbind(-1)
        dw = (dw / ww).clamp(max=self.scale_clamp)
        dh = (dh / wh).clamp(max=self.scale_clamp)
        cx, cy = dx / wx * aw + acx, dy / wy * ah + acy
        half_w, half_h = (torch.exp(dw) * aw - 1) / 2, (torch.exp(dh) * ah - 1) / 2
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)

    def _encode_point(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """gt_boxes, anchors (..., 4) -> (l, t, r, b) (..., 4)."""
        acx, acy, aw, ah = _centre_size(anchors)
        x1, y1, x2, y2 = gt_boxes.unbind(-1)
        s = self.point_scale
        return torch.stack((s * (acx - x1) / aw, s * (acy - y1) / ah, s * (x2 - acx) / aw, s * (y2 - acy) / ah), dim=-1)

    def _decode_point(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """(l, t, r, b), anchors (..., 4) -> xyxy boxes (..., 4); no clamp."""
        acx, acy, aw, ah = _centre_size(anchors.to(deltas.dtype))
        l, t, r, b = deltas.unbind(-1)
        s = self.point_scale
        return torch.stack((acx - l * aw / s, acy - t * ah / s, acx + r * aw / s, acy + b * ah / s), dim=-1)

    def __repr__(self):
        return f"BoxCoder(mode={self.mode!r}, weights={self.weights}, point_scale={self.point_scale})"


class LTRBCoder:
    """Distances (l, t, r, b) from a location to the sides of a box (FCOS, atss_heads §9.1).

    Locations are the cells of ``PointGenerator``: the centre is the point,
    x2 - x1 the stride. With ``in_strides`` the distances are in strides
    (FCOS NORM_REG_TARGETS), otherwise in pixels. Continuous geometry, no +1.
    """

    def __init__(self, in_strides: bool = False):
        self.in_strides = bool(in_strides)

    def _centre_unit(self, cells: Tensor):
        x1, y1, x2, y2 = cells.unbind(-1)
        unit = (x2 - x1) if self.in_strides else torch.ones_like(x1)
        return (x1 + x2) / 2, (y1 + y2) / 2, unit

    def encode(self, gt_boxes: Tensor, cells: Tensor) -> Tensor:
        """gt_boxes, cells (..., 4) -> (l, t, r, b) (..., 4)."""
        cx, cy, unit = self._centre_unit(cells)
        x1, y1, x2, y2 = gt_boxes.unbind(-1)
        return torch.stack((cx - x1, cy - y1, x2 - cx, y2 - cy), dim=-1) / unit[..., None]

    def decode(self, deltas: Tensor, cells: Tensor) -> Tensor:
        """(l, t, r, b), cells (..., 4) -> xyxy boxes (..., 4) in deltas' dtype; no clamp."""
        cx, cy, unit = self._centre_unit(cells.to(deltas.dtype))
        l, t, r, b = (deltas * unit[..., None]).unbind(-1)
        return torch.stack((cx - l, cy - t, cx + r, cy + b), dim=-1)

    def __repr__(self):
        return f"LTRBCoder(in_strides={self.in_strides})"
