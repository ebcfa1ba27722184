"""COCO-format detection dataset (boxes and labels only).

Behaviour of sfzhang15/ATSS ``data/datasets/coco.py`` without masks and
keypoints, with the +1 pixel convention made explicit as ``box_offset``
(spec C4): a json box ``[x, y, w, h]`` becomes ``[x, y, x + w - o, y + h - o]``,
clipped to ``[0, W - o] x [0, H - o]``; boxes left empty are dropped.

Bad input is reported instead of crashing later: unknown category ids and
malformed boxes fail at construction, one log line counts the boxes that were
clipped or dropped, and an unreadable image is skipped with a warning.
"""
import contextlib
import io
import logging
import os
import random

import torch
from PIL import Image
from pycocotools.coco import COCO

from atss_core.structures.bounding_box import BoxList

logger = logging.getLogger(__name__)

# Box fates, in the order _box_fates decides them.
KEPT, CLIPPED, DEGENERATE, OUTSIDE = range(4)
# Consecutive unreadable images tolerated before __getitem__ gives up.
MAX_BAD_IMAGES = 10
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _box_is_usable(w, h, box_offset):
    """Whether json sizes survive conversion (floats or tensors).

    +1 convention: w = 1 gives x2 == x1, so w and h must exceed 1 (the
    original's "only empty boxes" rule). Continuous convention: w, h >= 1 (C4).
    NaN is never usable.
    """
    return ((w > 1) & (h > 1)) if box_offset == 1 else ((w >= 1) & (h >= 1))


def has_valid_annotation(anns, box_offset=1):
    """An image is kept for training iff it has an annotation with a usable box.

    Crowd annotations count here (as in the original), so a crowd-only image
    is kept and yields an empty target (spec C23).
    """
    return any(_box_is_usable(a["bbox"][2], a["bbox"][3], box_offset) for a in anns)


def _box_fates(xywh, image_wh, box_offset):
    """Convert json boxes and decide which survive.

    Args:
        xywh: (M, 4) json boxes; image_wh: (M, 2) the (W, H) of each box's image.
    Returns:
        xyxy (M, 4) clipped to the image, and fate (M,) int64: KEPT, CLIPPED
        (kept, moved inside), DEGENERATE (w or h too small, or NaN) or
        OUTSIDE (empty once clipped).
    """
    o = box_offset
    x, y, w, h = xywh.unbind(dim=1)
    xyxy = torch.stack((x, y, x + (w - o).clamp(min=0), y + (h - o).clamp(min=0)), dim=1)
    limits = (image_wh - o).repeat(1, 2)
    clipped = torch.minimum(xyxy.clamp(min=0), limits)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    fate = torch.full((len(xywh),), KEPT, dtype=torch.int64)
    fate[(clipped != xyxy).any(dim=1)] = CLIPPED
    fate[~inside] = OUTSIDE
    fate[~_box_is_usable(w, h, o)] = DEGENERATE
    return clipped, fate


class COCODataset(torch.utils.data.Dataset):
    """Images of ``root`` with the boxes of ``ann_file``.

    ``dataset[i]`` = ``(img, target, i)``: ``img`` a PIL RGB image (or whatever
    ``transforms`` makes of it), ``target`` an xyxy ``BoxList`` with field
    ``labels`` (int64 (G,), contiguous 1..K). An unreadable image is replaced
    by a randomly drawn one, whose index is then returned.
    ``box_stats`` counts the non-crowd boxes of the kept images by fate.
    """

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None, box_offset=1):
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"COCO image directory not found: {root} (annotations: {ann_file})")
        if box_offset not in (0, 1):
            raise ValueError(f"box_offset must be 0 or 1, got {box_offset!r}")
        self.root = root
        self.ann_file = ann_file
        self.box_offset = box_offset
        self._transforms = transforms
        self._unreadable = set()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(ann_file)

        ids = sorted(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [
                i for i in ids
                if has_valid_annotation(self.coco.loadAnns(self.coco.getAnnIds(imgIds=i, iscrowd=None)), box_offset)
            ]
        self.ids = ids
        self.id_to_img_map = dict(enumerate(self.ids))

        cat_ids = sorted(self.coco.getCatIds())
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        # index = contiguous label - 1
        self.categories = [self.coco.cats[c]["name"] for c in cat_ids]
        kept = set(self.ids)
        anns = [a for a in self.coco.anns.values() if a["image_id"] in kept and not a.get("iscrowd", 0)]
        self._validate(anns, kept)
        self.box_stats = self._count_box_fates(anns)

    def _validate(self, anns, image_ids):
        """Fail on unknown categories, malformed boxes or images without a size."""
        for a in anns:
            if a.get("category_id") not in self.json_category_id_to_contiguous_id:
                raise ValueError(
                    f"{self.ann_file}: annotation {a.get('id')} has category_id {a.get('category_id')!r}, "
                    f"which is not in 'categories' (ids {sorted(self.json_category_id_to_contiguous_id)})"
                )
            bbox = a.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{self.ann_file}: annotation {a.get('id')} has bbox {bbox!r}; expected [x, y, w, h]")
        for i in image_ids:
            info = self.coco.imgs[i]
            if not all(isinstance(info.get(k), (int, float)) and info[k] > 0 for k in ("width", "height")):
                raise ValueError(f"{self.ann_file}: image {i} needs positive 'width' and 'height', got {info}")

    def _count_box_fates(self, anns):
        """Count the fates of the (non-crowd) ``anns`` and log them in one line."""
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        sizes = [(self.coco.imgs[a["image_id"]]["width"], self.coco.imgs[a["image_id"]]["height"]) for a in anns]
        _, fate = _box_fates(xywh, torch.tensor(sizes, dtype=torch.float64).reshape(-1, 2), self.box_offset)
        stats = dict(zip(("kept", "clipped", "degenerate", "outside"), torch.bincount(fate, minlength=4).tolist()))
        changed = stats["clipped"] + stats["degenerate"] + stats["outside"]
        logger.log(
            logging.WARNING if changed else logging.INFO,
            "%s: %d images, %d boxes: %d clipped to the image, %d dropped (width or height %s), "
            "%d dropped (outside the image)",
            self.ann_file, len(self.ids), len(anns), stats["clipped"], stats["degenerate"],
            "<= 1" if self.box_offset == 1 else "< 1", stats["outside"],
        )
        return stats

    def __len__(self):
        return len(self.ids)

    def get_img_info(self, index):
        """The json image record (``width``, ``height``, ``file_name``, ``id``)."""
        return self.coco.imgs[self.id_to_img_map[index]]

    def _load_image(self, info):
        path = os.path.join(self.root, info["file_name"])
        with Image.open(path) as img:
            return img.convert("RGB")

    def _load_readable(self, idx):
        """(index, PIL image) of ``idx``, or of random stand-ins while images fail to load."""
        failures = []
        while True:
            info = self.get_img_info(idx)
            try:
                return idx, self._load_image(info)
            except _IMAGE_ERRORS as e:
                path = os.path.join(self.root, info["file_name"])
                failures.append(f"{path} ({type(e).__name__}: {e})")
                if path not in self._unreadable:
                    self._unreadable.add(path)
                    logger.warning("skipping unreadable image %s (%s: %s); drawing another", path, type(e).__name__, e)
                if len(failures) > MAX_BAD_IMAGES:
                    raise RuntimeError(
                        f"{len(failures)} images in a row could not be read from {self.root}; is it the image "
                        f"folder of {self.ann_file}? Last failures: " + "; ".join(failures[-3:])
                    ) from e
                idx = random.randrange(len(self))

    def _load_target(self, img_id, image_size):
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id, iscrowd=None))
        anns = [a for a in anns if a.get("iscrowd", 0) == 0]
        xywh = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        image_wh = torch.tensor([image_size], dtype=torch.float32).expand(len(anns), 2)
        boxes, fate = _box_fates(xywh, image_wh, self.box_offset)
        keep = fate <= CLIPPED
        to_label = self.json_category_id_to_contiguous_id
        labels = torch.tensor([to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        target = BoxList(boxes[keep], image_size, mode="xyxy", box_offset=self.box_offset)
        target.add_field("labels", labels[keep])
        return target

    def __getitem__(self, idx):
        idx, img = self._load_readable(idx)
        target = self._load_target(self.id_to_img_map[idx], img.size)
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        return img, target, idx
