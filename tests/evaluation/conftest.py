"""Fixtures: a hand-made COCO ground truth and a minimal dataset wrapper around it."""
import json

import pytest
from pycocotools.coco import COCO

# Category ids skip 12, as COCO's do (json 13 -> contiguous 12).
CATEGORY_IDS = list(range(1, 12)) + [13, 14]

# (image id, width, height, [(category id, [x, y, w, h]), ...])
IMAGES = [
    (101, 640, 480, [(13, [10, 20, 30, 40]), (1, [100, 100, 200, 150])]),
    (205, 320, 200, [(5, [0, 0, 320, 200]), (14, [40, 50, 8, 6])]),
    (310, 300, 300, [(13, [150, 10, 60, 120])]),
]


def write_gt_json(path):
    images, annotations = [], []
    for image_id, width, height, objects in IMAGES:
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.png"})
        for category_id, (x, y, w, h) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"class_{c}"} for c in CATEGORY_IDS]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


class TinyCocoDataset:
    """Exposes what the evaluator reads, as ``atss_core.data`` COCODataset does."""

    def __init__(self, ann_file):
        self.coco = COCO(ann_file)
        self.ids = sorted(self.coco.imgs)
        self.id_to_img_map = dict(enumerate(self.ids))
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(sorted(self.coco.getCatIds()))}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}

    def __len__(self):
        return len(self.ids)

    def get_img_info(self, index):
        return self.coco.imgs[self.id_to_img_map[index]]


@pytest.fixture
def gt_images():
    """The ground truth as ``(image id, width, height, [(category id, xywh), ...])``."""
    return IMAGES


@pytest.fixture
def coco_dataset(tmp_path):
    path = tmp_path / "gt.json"
    write_gt_json(path)
    return TinyCocoDataset(str(path))
