"""``BoxList``: the boxes of one image plus per-box fields (labels, scores, ...).

Same interface as sfzhang15/ATSS ``structures/bounding_box.py``. The +1 pixel
convention of the original (width = x2 - x1 + 1) is the ``box_offset``
attribute: 1 for the ATSS family, 0 for the mmdetection family (spec C4). It
is carried to every BoxList derived from this one.
"""
import torch

FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1
_MODES = ("xyxy", "xywh")


class BoxList:
    """Boxes ``bbox`` (N, 4) of an image of ``size`` = (w, h).

    ``mode`` is "xyxy" (corners) or "xywh" (corner + extent). ``extra_fields``
    maps a name to a tensor (or BoxList) whose first dim is N.
    """

    def __init__(self, bbox, image_size, mode="xyxy", box_offset=1):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if bbox.ndim == 1 and bbox.numel() == 0:
            bbox = bbox.reshape(0, 4)
        if bbox.ndim != 2 or bbox.size(-1) != 4:
            raise ValueError(f"bbox must have shape (N, 4), got {tuple(bbox.shape)}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if box_offset not in (0, 1):
            raise ValueError(f"box_offset must be 0 or 1, got {box_offset!r}")
        self.bbox = bbox
        self.size = tuple(int(s) for s in image_size)  # (w, h)
        self.mode = mode
        self.box_offset = int(box_offset)
        self.extra_fields = {}

    # fields ------------------------------------------------------------------
    def add_field(self, field, field_data):
        self.extra_fields[field] = field_data

    def get_field(self, field):
        return self.extra_fields[field]

    def has_field(self, field):
        return field in self.extra_fields

    def fields(self):
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, other):
        self.extra_fields.update(other.extra_fields)

    def _new(self, bbox, size=None, mode=None):
        return BoxList(bbox, size or self.size, mode or self.mode, self.box_offset)

    # geometry ----------------------------------------------------------------
    def _split_into_xyxy(self):
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        x, y, w, h = self.bbox.split(1, dim=-1)
        o = self.box_offset
        return x, y, x + (w - o).clamp(min=0), y + (h - o).clamp(min=0)

    def convert(self, mode):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == self.mode:
            return self
        x1, y1, x2, y2 = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((x1, y1, x2, y2), dim=-1)
        else:
            o = self.box_offset
            bbox = torch.cat((x1, y1, x2 - x1 + o, y2 - y1 + o), dim=-1)
        out = self._new(bbox, mode=mode)
        out._copy_extra_fields(self)
        return out

    def resize(self, size):
        """Scale boxes to an image of ``size`` = (w, h); x and y scale separately."""
        ratios = [float(s) / float(s_orig) for s, s_orig in zip(size, self.size)]
        if ratios[0] == ratios[1]:
            out = self._new(self.bbox * ratios[0], size=size)
        else:
            rw, rh = ratios
            x1, y1, x2, y2 = self._split_into_xyxy()
            bbox = torch.cat((x1 * rw, y1 * rh, x2 * rw, y2 * rh), dim=-1)
            out = self._new(bbox, size=size, mode="xyxy")
        for k, v in self.extra_fields.items():
            out.add_field(k, v.resize(size) if isinstance(v, BoxList) else v)
        return out.convert(self.mode)

    def transpose(self, method):
        """Flip left-right (0) or top-bottom (1) inside the image."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise NotImplementedError("only FLIP_LEFT_RIGHT (0) and FLIP_TOP_BOTTOM (1) are implemented")
        w, h = self.size
        o = self.box_offset
        x1, y1, x2, y2 = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            bbox = torch.cat((w - x2 - o, y1, w - x1 - o, y2), dim=-1)
        else:
            # The original flips y without the -1 (inconsistent with x); we use
            # the same convention on both axes. No shipped pipeline flips y.
            bbox = torch.cat((x1, h - y2 - o, x2, h - y1 - o), dim=-1)
        out = self._new(bbox, mode="xyxy")
        for k, v in self.extra_fields.items():
            out.add_field(k, v.transpose(method) if isinstance(v, BoxList) else v)
        return out.convert(self.mode)

    def clip_to_image(self, remove_empty=True):
        """Clamp boxes into the image (in place) and optionally drop empty ones.

        The clamp is [0, w - box_offset] x [0, h - box_offset]. A box is empty
        when x2 <= x1 or y2 <= y1 (so a w = 1 box is empty under +1).
        """
        o = self.box_offset
        w, h = self.size
        if self.mode != "xyxy":
            raise ValueError("clip_to_image expects an xyxy BoxList")
        self.bbox[:, 0].clamp_(min=0, max=w - o)
        self.bbox[:, 1].clamp_(min=0, max=h - o)
        self.bbox[:, 2].clamp_(min=0, max=w - o)
        self.bbox[:, 3].clamp_(min=0, max=h - o)
        if remove_empty:
            box = self.bbox
            keep = (box[:, 3] > box[:, 1]) & (box[:, 2] > box[:, 0])
            return self[keep]
        return self

    def area(self):
        if self.mode == "xyxy":
            o = self.box_offset
            b = self.bbox
            return (b[:, 2] - b[:, 0] + o) * (b[:, 3] - b[:, 1] + o)
        return self.bbox[:, 2] * self.bbox[:, 3]

    # container protocol ------------------------------------------------------
    def to(self, device):
        out = self._new(self.bbox.to(device))
        for k, v in self.extra_fields.items():
            out.add_field(k, v.to(device) if hasattr(v, "to") else v)
        return out

    def __getitem__(self, item):
        out = self._new(self.bbox[item])
        for k, v in self.extra_fields.items():
            out.add_field(k, v[item])
        return out

    def __len__(self):
        return self.bbox.shape[0]

    def copy_with_fields(self, fields, skip_missing=False):
        out = self._new(self.bbox)
        if not isinstance(fields, (list, tuple)):
            fields = [fields]
        for f in fields:
            if self.has_field(f):
                out.add_field(f, self.get_field(f))
            elif not skip_missing:
                raise KeyError(f"field '{f}' not found in {self}")
        return out

    def __repr__(self):
        return (
            f"{type(self).__name__}(num_boxes={len(self)}, image_width={self.size[0]}, "
            f"image_height={self.size[1]}, mode={self.mode}, box_offset={self.box_offset})"
        )
