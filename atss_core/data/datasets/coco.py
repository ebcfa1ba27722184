"""COCO-format detection dataset (boxes and labels only).

Behaviour of sfzhang15/ATSS ``data/datasets/coco.py`` without masks and
keypoints, with the +1 pixel convention made explicit as ``box_offset``
(spec C4): a json box ``[x, y, w, h]`` becomes ``[x, y, x + w - o, y + h - o]``.
"""
import contextlib
import io
import os

import torch
from PIL import Image
from pycocotools.coco import COCO

from atss_core.structures.bounding_box import BoxList


def _box_is_usable(bbox, box_offset):
    """Whether a json box survives conversion and ``clip_to_image(remove_empty=True)``.

    +1 convention: w = 1 gives x2 == x1, so w and h must exceed 1 (the
    original's "only empty boxes" rule). Continuous convention: w, h >= 1 (C4).
    """
    w, h = bbox[2], bbox[3]
    return (w > 1 and h > 1) if box_offset == 1 else (w >= 1 and h >= 1)


def has_valid_annotation(anns, box_offset=1):
    """An image is kept for training iff it has an annotation with a usable box.

    Crowd annotations count here (as in the original), so a crowd-only image
    is kept and yields an empty target (spec C23).
    """
    return any(_box_is_usable(a["bbox"], box_offset) for a in anns)


class COCODataset(torch.utils.data.Dataset):
    """Images of ``root`` with the boxes of ``ann_file``.

    ``dataset[i]`` = ``(img, target, i)``: ``img`` a PIL RGB image (or whatever
    ``transforms`` makes of it), ``target`` an xyxy ``BoxList`` with field
    ``labels`` (int64 (G,), contiguous 1..K).
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

    def __len__(self):
        return len(self.ids)

    def get_img_info(self, index):
        """The json image record (``width``, ``height``, ``file_name``, ``id``)."""
        return self.coco.imgs[self.id_to_img_map[index]]

    def _load_image(self, info):
        path = os.path.join(self.root, info["file_name"])
        with Image.open(path) as img:
            return img.convert("RGB")

    def _load_target(self, img_id, image_size):
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id, iscrowd=None))
        anns = [a for a in anns if a.get("iscrowd", 0) == 0]
        if self.box_offset == 0:
            # continuous convention: sub-pixel boxes are noise (C4)
            anns = [a for a in anns if a["bbox"][2] >= 1 and a["bbox"][3] >= 1]
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, image_size, mode="xywh", box_offset=self.box_offset).convert("xyxy")
        labels = [self.json_category_id_to_contiguous_id[a["category_id"]] for a in anns]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        return target.clip_to_image(remove_empty=True)

    def __getitem__(self, idx):
        info = self.get_img_info(idx)
        img = self._load_image(info)
        target = self._load_target(info["id"], img.size)
        if self._transforms is not None:
            img, target = self._transforms(img, target)
        return img, target, idx
