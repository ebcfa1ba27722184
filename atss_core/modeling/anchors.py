"""Anchor generation (framework §3.5, atss_heads §3).

Cell anchors are built in float64 with Python's half-to-even ``round`` (what
NumPy did in sfzhang15/ATSS ``anchor_generator.py``) and stored as float32
buffers named ``cell_anchors.<level>``, the checkpoint keys
``rpn.anchor_generator.cell_anchors.N``.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn


def generate_cell_anchors(stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors of one location at the origin -> (len(ratios) * len(sizes), 4) float32 xyxy.

    The reference window is [0.5, 0.5, s - 0.5, s - 0.5] (ATSS subtracts 0.5
    where maskrcnn-benchmark subtracted 1), so the centre is (s/2, s/2) and
    grid anchors sit at s * (j + 1/2). Widths use the +1 convention. Order is
    ratio-major, then size. ``ratio`` = h / w.
    """
    ctr = stride / 2.0
    boxes = []
    for ratio in aspect_ratios:
        ws = round(math.sqrt(stride * stride / ratio))
        hs = round(ws * ratio)
        for size in sizes:
            scale = size / stride
            half_w, half_h = (ws * scale - 1) / 2.0, (hs * scale - 1) / 2.0
            boxes.append([ctr - half_w, ctr - half_h, ctr + half_w, ctr + half_h])
    return torch.tensor(boxes, dtype=torch.float64).float()


def octave_sizes(sizes: Sequence[float], octave: float, scales_per_octave: int) -> List[Tuple[float, ...]]:
    """Per-level size tuples ``size * octave ** (i / scales_per_octave)``, i < scales_per_octave."""
    return [tuple(s * octave ** (i / scales_per_octave) for i in range(scales_per_octave)) for s in sizes]


def shift_cells(cell: Tensor, stride: int, grid_size: Tuple[int, int]) -> Tensor:
    """Boxes of one location (A, 4) repeated over an (H, W) grid with shifts (x s, y s)
    -> (H * W * A, 4), ordered y, x, a (row-major, y outer)."""
    h, w = grid_size
    ys = torch.arange(h, dtype=torch.float32, device=cell.device) * stride
    xs = torch.arange(w, dtype=torch.float32, device=cell.device) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((x, y, x, y), dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)


class BufferList(nn.Module):
    """Like ``nn.ParameterList`` for buffers: keys ``0``, ``1``, ... in the state dict."""

    def __init__(self, buffers: Sequence[Tensor] = ()):
        super().__init__()
        for i, buf in enumerate(buffers):
            self.register_buffer(str(i), buf)

    def __len__(self):
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())

    def __getitem__(self, i: int) -> Tensor:
        return self._buffers[str(i)]


class AnchorGenerator(nn.Module):
    """Anchors for every location of every FPN level.

    Args:
        sizes: per level, a tuple of anchor sizes (or one number).
        aspect_ratios: h / w ratios shared by all levels.
        strides: per-level strides (same length as ``sizes``).
        straddle_thresh: kept for config compatibility; no dense head reads
            anchor visibility (atss_heads §2.4), so it has no effect.
    """

    def __init__(
        self,
        sizes: Sequence,
        aspect_ratios: Sequence[float] = (1.0,),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        straddle_thresh: float = 0,
    ):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"need one anchor size entry per stride, got sizes={sizes} strides={strides}")
        sizes = [tuple(s) if isinstance(s, (tuple, list)) else (s,) for s in sizes]
        self.strides = tuple(int(s) for s in strides)
        self.straddle_thresh = straddle_thresh
        self.cell_anchors = BufferList(
            [generate_cell_anchors(s, size, aspect_ratios) for s, size in zip(self.strides, sizes)]
        )

    def num_anchors_per_location(self) -> List[int]:
        return [len(c) for c in self.cell_anchors]

    def grid_anchors(self, grid_sizes: Sequence[Tuple[int, int]]) -> List[Tensor]:
        """Per level (H_l * W_l * A, 4), ordered y, x, a (row-major, y outer)."""
        return [shift_cells(cell, stride, hw) for hw, stride, cell in zip(grid_sizes, self.strides, self.cell_anchors)]

    def forward(self, features: Sequence[Tensor]) -> Tuple[Tensor, List[int]]:
        """Anchors shared by every image of the batch.

        Args:
            features: per-level maps (N, ·, H_l, W_l) of the padded batch.
        Returns:
            anchors (R, 4) xyxy, levels concatenated; num_per_level [L].
        """
        if len(features) != len(self.strides):
            raise ValueError(f"got {len(features)} feature levels for {len(self.strides)} anchor strides")
        per_level = self.grid_anchors([tuple(f.shape[-2:]) for f in features])
        return torch.cat(per_level, dim=0), [len(a) for a in per_level]


class PointGenerator(nn.Module):
    """One location per feature-map cell, for the anchor-free (FCOS-style) heads.

    The location (y, x) of a level with stride s is the point
    p = ((x + offset) s, (y + offset) s). It is emitted as the box
    [p - s/2, p + s/2] on both axes (its stride cell when offset = 0.5), so the
    box centre is the point and x2 - x1 is the stride: one (R, 4) tensor carries
    both to the coders, assigners and ``DenseHead`` exactly like anchors.
    FCOS uses offset 0.5, i.e. ``k s + s // 2`` for its even strides (spec C6).
    No parameters or buffers, hence no checkpoint keys.
    """

    def __init__(self, strides: Sequence[int] = (8, 16, 32, 64, 128), offset: float = 0.5):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)

    def forward(self, features: Sequence[Tensor]) -> Tuple[Tensor, List[int]]:
        """features: per-level maps (N, ·, H_l, W_l) -> cells (R, 4), levels concatenated; num_per_level [L]."""
        if len(features) != len(self.strides):
            raise ValueError(f"got {len(features)} feature levels for {len(self.strides)} point strides")
        per_level = []
        for f, s in zip(features, self.strides):
            # Filled on the device: a tensor made from a Python list would make the host wait for it.
            cell = torch.full((1, 4), (self.offset + 0.5) * s, dtype=torch.float32, device=f.device)
            cell[:, :2] = (self.offset - 0.5) * s
            per_level.append(shift_cells(cell, s, tuple(f.shape[-2:])))
        return torch.cat(per_level, dim=0), [len(p) for p in per_level]

    def extra_repr(self):
        return f"strides={self.strides}, offset={self.offset}"


def make_anchor_generator(cfg, head: str = "ATSS") -> AnchorGenerator:
    """``MODEL.<head>.{ANCHOR_SIZES, ASPECT_RATIOS, ANCHOR_STRIDES, STRADDLE_THRESH, OCTAVE,
    SCALES_PER_OCTAVE}`` for head "ATSS" (also Dynamic ATSS) or "RETINANET"."""
    c = cfg.MODEL[head]
    if len(c.ANCHOR_SIZES) != len(c.ANCHOR_STRIDES):
        raise ValueError(
            f"MODEL.{head}.ANCHOR_SIZES {tuple(c.ANCHOR_SIZES)} and MODEL.{head}.ANCHOR_STRIDES "
            f"{tuple(c.ANCHOR_STRIDES)} must have one entry per FPN level"
        )
    return AnchorGenerator(
        octave_sizes(c.ANCHOR_SIZES, c.OCTAVE, c.SCALES_PER_OCTAVE),
        tuple(c.ASPECT_RATIOS),
        tuple(c.ANCHOR_STRIDES),
        c.STRADDLE_THRESH,
    )


def make_anchor_generator_atss(cfg) -> AnchorGenerator:
    return make_anchor_generator(cfg, "ATSS")


def make_anchor_generator_retinanet(cfg) -> AnchorGenerator:
    return make_anchor_generator(cfg, "RETINANET")
