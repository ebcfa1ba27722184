"""Image + target transforms (framework spec 5.3; sfzhang15/ATSS ``data/transforms/transforms.py``).

Every transform is called as ``t(image, target)`` -> ``(image, target)``, or
as ``t(image)`` -> ``image`` when there is no target (test-time augmentation,
demo). ``target`` is a ``BoxList`` in the image's pixel coordinates. Python's
``random`` drives the scale choice and the flip, so the DataLoader's per-worker
seeding makes them reproducible.
"""
import random

import torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode


def _image_wh(image):
    """(w, h) of a PIL image or a (C, H, W) tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return image.size


def _out(image, target):
    return image if target is None else (image, target)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for t in self.transforms:
            if target is None:
                image = t(image)
            else:
                image, target = t(image, target)
        return _out(image, target)

    def __repr__(self):
        inner = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({inner}\n)"


class Resize:
    """Scale the shorter side to a size drawn from ``min_size``, the longer side capped at ``max_size``."""

    def __init__(self, min_size, max_size):
        if isinstance(min_size, int):
            min_size = (min_size,)
        min_size = tuple(min_size)
        if not min_size or any(not isinstance(s, int) or s <= 0 for s in min_size):
            raise ValueError(f"Resize min_size must be positive ints, got {min_size!r}")
        if max_size is not None and max_size <= 0:
            raise ValueError(f"Resize max_size must be positive, got {max_size!r}")
        self.min_size = min_size
        self.max_size = max_size

    def get_size(self, image_size):
        """Output (h, w) for an input of ``image_size`` = (w, h).

        Integer arithmetic exactly as the original: Python ``round`` (half to
        even) when the cap applies, truncation for the longer side.
        """
        w, h = image_size
        size = random.choice(self.min_size)
        if self.max_size is not None:
            short, long = float(min(w, h)), float(max(w, h))
            if long / short * size > self.max_size:
                size = int(round(self.max_size * short / long))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        oh, ow = self.get_size(_image_wh(image))
        # PIL bilinear antialiases when shrinking; antialias=True keeps tensors close to it.
        image = F.resize(image, [oh, ow], interpolation=InterpolationMode.BILINEAR, antialias=True)
        if target is not None:
            target = target.resize((ow, oh))
        return _out(image, target)

    def __repr__(self):
        sizes = self.min_size if len(self.min_size) <= 4 else f"{self.min_size[0]}..{self.min_size[-1]}"
        return f"{type(self).__name__}(min_size={sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    def __init__(self, prob=0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {prob!r}")
        self.prob = prob

    def __call__(self, image, target=None):
        # random() is drawn even when prob = 0, keeping the stream as the original's
        if random.random() < self.prob:
            image = F.hflip(image)
            if target is not None:
                target = target.transpose(0)
        return _out(image, target)

    def __repr__(self):
        return f"{type(self).__name__}(prob={self.prob})"


class ToTensor:
    """PIL RGB -> float (3, H, W) in [0, 1]."""

    def __call__(self, image, target=None):
        return _out(F.to_tensor(image), target)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize:
    """(x - mean) / std per channel, after RGB [0, 1] -> BGR [0, 255] if ``to_bgr255`` (spec C13)."""

    def __init__(self, mean, std, to_bgr255=True):
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise ValueError(f"Normalize needs 3 means and 3 non-zero stds, got mean={mean}, std={std}")
        self.mean = mean
        self.std = std
        self.to_bgr255 = to_bgr255

    def __call__(self, image, target=None):
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255
        image = F.normalize(image, mean=self.mean, std=self.std)
        return _out(image, target)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std}, to_bgr255={self.to_bgr255})"
