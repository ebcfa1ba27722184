"""Deterministic toy detection dataset: filled shapes on a cluttered background.

Each image holds 0-6 flat-coloured shapes (class = shape: circle, square,
triangle; colour random, bright) on a dim textured background with
unannotated clutter (thin lines and specks). Objects may overlap, but every
annotated object keeps at least ``MIN_VISIBLE`` of its pixels. Boxes are the
tight COCO ``[x, y, w, h]`` of the object's *visible* pixels (x, y = first
pixel, w, h = pixel extent, as a person would annotate), ``area`` is the
visible pixel count.

The data is written as PNG images and COCO json, so it goes through the same
``COCODataset`` and evaluation code as COCO. Same parameters -> byte-identical
files: every image draws from its own generator seeded by (seed, split, index).

Layout of a dataset directory::

    meta.json                      generator version and parameters
    train/000000.png ...           val/000000.png ...
    annotations/toy_shapes_{train,val}.json
"""
import colorsys
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

VERSION = 1
CATEGORIES = ("circle", "square", "triangle")  # json category id = index + 1
SPLITS = ("train", "val")
MIN_VISIBLE = 0.6  # fraction of an object's pixels that must stay unoccluded
EMPTY_EVERY = 15  # image i is empty iff i % EMPTY_EVERY == EMPTY_EVERY // 2 (~6.7%)
MAX_OBJECTS = 6
BACKGROUND_MAX = 120  # background channels stay <= this; shapes have a channel >= 191
DEFAULTS = dict(num_train=800, num_val=150, seed=0, size=128)


@dataclass
class ToyObject:
    """One annotated shape: ``bbox`` = visible [x, y, w, h] (ints), ``area`` = visible pixels."""

    category_id: int
    bbox: list
    area: int
    full_area: int
    color: tuple  # RGB, unique in its image


def image_size_range(size):
    """Inclusive (lo, hi) range of widths and heights for nominal ``size`` (128 -> 112..160)."""
    return int(round(size * 0.875)), int(round(size * 1.25))


def object_side_range(size):
    """Inclusive (lo, hi) range of object box sides (128 -> 8..64)."""
    return max(8, size // 16), max(8, size // 2)


def _shape_mask(category_id, w, h, pointing_up):
    """Bool (h, w) mask of a shape filling a w x h box, drawn without anti-aliasing."""
    if CATEGORIES[category_id - 1] == "square":
        return np.ones((h, w), dtype=bool)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if CATEGORIES[category_id - 1] == "circle":
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
    else:
        apex, base = (0, h - 1) if pointing_up else (h - 1, 0)
        draw.polygon([(0, base), (w - 1, base), ((w - 1) / 2, apex)], fill=1)
    return np.asarray(canvas, dtype=bool)


def _bright_color(rng):
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _background(rng, width, height):
    """Dim gradient + low-frequency blotches + pixel noise, uint8 (H, W, 3)."""
    c0, c1 = rng.uniform(10, 90, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    t = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
    t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
    coarse = Image.fromarray(rng.uniform(0, 255, size=(4, 4)).astype(np.uint8), mode="L")
    blotches = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32)
    img = c0 * (1 - t) + c1 * t + (blotches[..., None] * np.float32(30 / 255) - 15)
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * 6
    return np.clip(np.rint(img), 0, BACKGROUND_MAX).astype(np.uint8)


def _color_far_from(rng, colors, min_l1=120, tries=30):
    """A bright colour not in ``colors``, at L1 distance >= min_l1 from each if possible."""
    best, best_d = None, -1
    for _ in range(tries):
        c = _bright_color(rng)
        d = min((sum(abs(a - b) for a, b in zip(c, o)) for o in colors), default=10**9)
        if d >= min_l1:
            return c
        if d > best_d:
            best, best_d = c, d
    while best in colors:  # practically unreachable: 30 draws all equal to an existing colour
        best = _bright_color(rng)
    return best


def _place_objects(rng, width, height, num_objects, side_range):
    """Sample shapes with the occlusion rule; returns (owner map (H, W) int, list of specs).

    ``owner`` holds the index of the object visible at each pixel, -1 for
    background. A candidate is rejected if it would leave an earlier object
    with less than MIN_VISIBLE of its pixels.
    """
    owner = np.full((height, width), -1, dtype=np.int16)
    specs = []
    lo, hi = side_range
    hi = min(hi, width, height)
    for _ in range(num_objects):
        for _attempt in range(30):
            category_id = int(rng.integers(1, len(CATEGORIES) + 1))
            side = np.exp(rng.uniform(np.log(lo), np.log(hi)))
            aspect = np.exp(rng.uniform(np.log(0.75), np.log(4 / 3)))
            w = int(np.clip(round(side * np.sqrt(aspect)), lo, hi))
            h = int(np.clip(round(side / np.sqrt(aspect)), lo, hi))
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            mask = _shape_mask(category_id, w, h, pointing_up=bool(rng.integers(0, 2)))
            covered = owner[y : y + h, x : x + w][mask]
            ok = all(
                np.count_nonzero(owner == j) - np.count_nonzero(covered == j) >= MIN_VISIBLE * s["full_area"]
                for j, s in enumerate(specs)
            )
            if ok:
                break
        else:
            continue  # no room for this object; the image simply holds fewer
        color = _color_far_from(rng, [s["color"] for s in specs])
        owner[y : y + h, x : x + w][mask] = len(specs)
        specs.append(dict(category_id=category_id, color=color, full_area=int(mask.sum())))
    return owner, specs


def _draw_clutter(rng, img, forbidden_colors):
    """Unannotated thin lines and specks, in colours no shape uses."""
    height, width = img.shape[:2]
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)

    def color():
        while True:
            c = tuple(int(v) for v in rng.integers(0, 256, size=3))
            if c not in forbidden_colors:
                return c

    for _ in range(int(rng.integers(0, 6))):
        x0, x1 = rng.integers(0, width, size=2)
        y0, y1 = rng.integers(0, height, size=2)
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=color(), width=1)
    for _ in range(int(rng.integers(0, 10))):
        x, y = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        s = int(rng.integers(0, 2))
        draw.rectangle([x, y, x + s, y + s], fill=color())
    return np.asarray(canvas).copy()


def render_image(seed, split, index, size=DEFAULTS["size"]):
    """Render image ``index`` of ``split``; returns (uint8 (H, W, 3) RGB, list[ToyObject])."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    lo, hi = image_size_range(size)
    width, height = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    empty = index % EMPTY_EVERY == EMPTY_EVERY // 2
    num_objects = 0 if empty else int(rng.integers(1, MAX_OBJECTS + 1))
    owner, specs = _place_objects(rng, width, height, num_objects, object_side_range(size))
    img = _background(rng, width, height)
    img = _draw_clutter(rng, img, {s["color"] for s in specs})
    objects = []
    for j, s in enumerate(specs):
        visible = owner == j
        img[visible] = s["color"]
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        objects.append(ToyObject(s["category_id"], bbox, int(visible.sum()), s["full_area"], s["color"]))
    return img, objects


def split_paths(root, split):
    """COCODataset args of ``split`` inside dataset directory ``root``."""
    return dict(
        root=os.path.join(root, split),
        ann_file=os.path.join(root, "annotations", f"toy_shapes_{split}.json"),
    )


def _write_split(root, split, num_images, seed, size):
    paths = split_paths(root, split)
    os.makedirs(paths["root"], exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = render_image(seed, split, i, size)
        file_name = f"{i:06d}.png"
        Image.fromarray(img).save(os.path.join(paths["root"], file_name), format="PNG", compress_level=1)
        images.append(dict(id=i + 1, file_name=file_name, width=img.shape[1], height=img.shape[0]))
        for obj in objects:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=obj.category_id,
                    bbox=obj.bbox,
                    area=obj.area,
                    iscrowd=0,
                )
            )
    categories = [dict(id=k + 1, name=name, supercategory="shape") for k, name in enumerate(CATEGORIES)]
    coco = dict(
        info=dict(description=f"atss_core toy shapes ({split})", version=str(VERSION)),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=categories,
    )
    os.makedirs(os.path.dirname(paths["ann_file"]), exist_ok=True)
    with open(paths["ann_file"], "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    return paths


def _meta(num_train, num_val, seed, size):
    return dict(version=VERSION, num_train=num_train, num_val=num_val, seed=seed, size=size)


def _is_complete(root):
    return os.path.isfile(os.path.join(root, "meta.json")) and all(
        os.path.isfile(split_paths(root, s)["ann_file"]) for s in SPLITS
    )


def _check_args(num_train, num_val, seed, size):
    for name, value, least in (("num_train", num_train, 0), ("num_val", num_val, 0), ("seed", seed, 0), ("size", size, 32)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"toy dataset {name} must be an int >= {least}, got {value!r}")


class ToyPaths(NamedTuple):
    """COCODataset args (``dict(root=image dir, ann_file=json path)``) of each split."""

    train: dict
    val: dict


def ensure_toy_dataset(
    root=None, num_train=DEFAULTS["num_train"], num_val=DEFAULTS["num_val"], seed=DEFAULTS["seed"], size=DEFAULTS["size"]
):
    """Generate the dataset into ``root`` unless it is already there; returns ``ToyPaths``.

    ``root`` defaults to the catalog's cache directory (``$ATSS_CORE_DATA/toy_shapes``
    or ``~/.cache/atss_core/toy_shapes``). Generation happens in a temporary
    sibling directory that is renamed to ``root`` at the end, so concurrent
    callers never see a half-written dataset: the first rename wins and the
    others discard theirs. An existing dataset made with other parameters is
    an error, not silently reused.
    """
    if root is None:
        from atss_core.config.paths_catalog import toy_shapes_root

        root = toy_shapes_root()
    _check_args(num_train, num_val, seed, size)
    root = os.path.abspath(root)
    meta = _meta(num_train, num_val, seed, size)
    if not _is_complete(root):
        parent = os.path.dirname(root)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}-tmp-", dir=parent)
        try:
            os.chmod(tmp, 0o755)
            _write_split(tmp, "train", num_train, seed, size)
            _write_split(tmp, "val", num_val, seed, size)
            # meta.json last: its presence marks a complete directory.
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, sort_keys=True)
            try:
                os.rename(tmp, root)  # atomic; replaces only an empty directory
            except OSError:
                if not _is_complete(root):
                    raise RuntimeError(
                        f"cannot create the toy dataset at {root}: the directory exists and is not "
                        "a complete toy dataset; delete it or choose another directory"
                    ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(root, "meta.json")) as f:
        found = json.load(f)
    if found != meta:
        raise ValueError(
            f"toy dataset at {root} was generated with {found}, but {meta} was requested; "
            "delete the directory or choose another one"
        )
    return ToyPaths(split_paths(root, "train"), split_paths(root, "val"))
