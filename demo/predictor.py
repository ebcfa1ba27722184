"""Run a trained detector on OpenCV images and draw its detections (framework spec 8.4)."""
import json
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from atss_core.data.build import load_paths_catalog
from atss_core.data.transforms.transforms import Resize
from atss_core.modeling.detector import build_detection_model
from atss_core.structures.image_list import to_image_list
from atss_core.utils.checkpoint import DetectronCheckpointer

# Index = contiguous label - 1.
COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

_PALETTE = np.array([2**25 - 1, 2**15 - 1, 2**21 - 1], dtype=np.int64)


def categories_from_catalog(cfg):
    """Class names of the first ``DATASETS.TEST`` set, if its annotation file exists locally."""
    if not cfg.DATASETS.TEST:
        return None
    try:
        catalog = load_paths_catalog(cfg.PATHS_CATALOG)
        ann_file = catalog.DatasetCatalog.get(cfg.DATASETS.TEST[0])["args"]["ann_file"]
    except (KeyError, OSError, AttributeError):
        return None
    if not os.path.isfile(ann_file):
        return None
    with open(ann_file) as f:
        categories = json.load(f).get("categories", [])
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])] or None


def label_color(label):
    """A fixed BGR colour per label, as python ints (what cv2 wants)."""
    return tuple(int(c) for c in (label * _PALETTE) % 255)


class COCODemo:
    """A detector plus the transform, selection and drawing of the original demo.

    Args:
        cfg: a frozen config; MODEL.WEIGHT is loaded (never replaced by an
            OUTPUT_DIR/last_checkpoint).
        confidence_threshold: a score threshold, or one per class (index = label - 1).
        min_image_size: shorter side of the network input, longer side uncapped
            (the original demo's behaviour); None (default) resizes exactly as
            evaluation does, with INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, so the
            detections match what the model was trained and tested on.
        categories: class names (index = label - 1); default: the checkpoint's
            stored ``categories``, else the DATASETS.TEST annotation file, else COCO.
    """

    def __init__(self, cfg, confidence_threshold=0.5, min_image_size=None, categories=None):
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_detection_model(cfg).to(self.device).eval()
        extra = DetectronCheckpointer(cfg, self.model, save_dir=cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHT, use_latest=False)
        self.categories = list(categories or extra.get("categories") or categories_from_catalog(cfg) or COCO_CATEGORIES)
        self.thresholds = self._threshold_tensor(confidence_threshold)
        if min_image_size is None:
            self.resize = Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        else:
            self.resize = Resize(min_image_size, None)
        self.to_bgr255 = cfg.INPUT.TO_BGR255
        self.pixel_mean = torch.tensor(cfg.INPUT.PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.pixel_std = torch.tensor(cfg.INPUT.PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
        self.size_divisible = cfg.DATALOADER.SIZE_DIVISIBILITY

    def _threshold_tensor(self, confidence_threshold):
        if isinstance(confidence_threshold, (int, float)):
            return torch.full((len(self.categories),), float(confidence_threshold))
        thresholds = torch.as_tensor(list(confidence_threshold), dtype=torch.float32)
        if thresholds.numel() != len(self.categories):
            raise ValueError(
                f"confidence_threshold: got {thresholds.numel()} per-class values for {len(self.categories)} classes"
            )
        return thresholds

    def preprocess(self, image):
        """BGR uint8 [H, W, 3] -> normalised ImageList [1, 3, Hp, Wp]."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        if not self.to_bgr255:
            x = x[[2, 1, 0]] / 255.0  # RGB in [0, 1] (spec C13)
        size = self.resize.get_size((x.shape[2], x.shape[1]))
        if size != tuple(x.shape[1:]):
            # antialias: close to the PIL bilinear resize of the original demo
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        x = (x - self.pixel_mean) / self.pixel_std
        return to_image_list(x, self.size_divisible)

    def compute_prediction(self, image):
        """Detections of a BGR image as a BoxList in that image's pixel coordinates."""
        images = self.preprocess(image).to(self.device)
        with torch.no_grad():
            prediction = self.model(images)[0].to(torch.device("cpu"))
        height, width = image.shape[:2]
        return prediction.resize((width, height))

    def select_top_predictions(self, predictions):
        """Detections with score > their class threshold, by decreasing score."""
        scores = predictions.get_field("scores")
        labels = predictions.get_field("labels")
        if len(labels) and (labels.min() < 1 or labels.max() > len(self.thresholds)):
            raise ValueError(f"labels must be in 1..{len(self.thresholds)}, got {labels.unique().tolist()}")
        keep = scores > self.thresholds[labels - 1]
        predictions = predictions[keep]
        order = predictions.get_field("scores").argsort(descending=True)
        return predictions[order]

    def label_name(self, label):
        return self.categories[label - 1] if 1 <= label <= len(self.categories) else str(label)

    def overlay(self, image, predictions, min_canvas=480):
        """A copy of ``image`` with a box and "<name>: <score>" per detection.

        Small images are enlarged (nearest neighbour) to ``min_canvas`` pixels on
        the shorter side first, so that labels stay legible; boxes are scaled
        with them.
        """
        scale = max(1, int(np.ceil(min_canvas / min(image.shape[:2]))))
        out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else image.copy()
        boxes = (predictions.convert("xyxy").bbox * scale).round().int().tolist()
        labels = predictions.get_field("labels").tolist()
        scores = predictions.get_field("scores").tolist()
        font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            cv2.rectangle(out, (x1, y1), (x2, y2), label_color(label), 2)
        for (x1, y1, _, _), label, score in zip(boxes, labels, scores):
            text = f"{self.label_name(label)}: {score:.2f}"
            (tw, th), base = cv2.getTextSize(text, font, font_scale, thickness)
            y = max(y1, th + base)  # keep the label inside the picture
            cv2.rectangle(out, (x1, y - th - base), (x1 + tw, y), label_color(label), -1)
            cv2.putText(out, text, (x1, y - base), font, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
        return out

    def run_on_opencv_image(self, image):
        """BGR uint8 image -> the same image with the selected detections drawn."""
        return self.overlay(image, self.select_top_predictions(self.compute_prediction(image)))
