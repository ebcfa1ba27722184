"""``ImageList``: a padded batch of images that remembers each image's size."""
import math

import torch


class ImageList:
    """``tensors`` (N, C, Hp, Wp) zero-padded; ``image_sizes`` list of (h, w) before padding."""

    def __init__(self, tensors, image_sizes):
        self.tensors = tensors
        self.image_sizes = [tuple(int(v) for v in s) for s in image_sizes]

    def to(self, *args, **kwargs):
        return ImageList(self.tensors.to(*args, **kwargs), self.image_sizes)

    def __len__(self):
        return len(self.image_sizes)


def to_image_list(tensors, size_divisible=0):
    """Batch images into an ImageList, zero-padding bottom/right.

    ``tensors``: an ImageList (returned as is), a (C, H, W) or (N, C, H, W)
    tensor, or a list of (C, H, W) tensors. The padded height and width are the
    batch maxima rounded up to a multiple of ``size_divisible`` (if > 0).
    """
    if isinstance(tensors, ImageList):
        return tensors
    if isinstance(tensors, torch.Tensor) and size_divisible > 0:
        tensors = [tensors] if tensors.dim() == 3 else list(tensors)
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() == 3:
            tensors = tensors[None]
        if tensors.dim() != 4:
            raise ValueError(f"expected a (C,H,W) or (N,C,H,W) tensor, got shape {tuple(tensors.shape)}")
        return ImageList(tensors, [t.shape[-2:] for t in tensors])
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"to_image_list expects tensors or a non-empty list of tensors, got {type(tensors)}")
    max_c = max(t.shape[0] for t in tensors)
    max_h = max(t.shape[1] for t in tensors)
    max_w = max(t.shape[2] for t in tensors)
    if size_divisible > 0:
        max_h = int(math.ceil(max_h / size_divisible) * size_divisible)
        max_w = int(math.ceil(max_w / size_divisible) * size_divisible)
    batched = tensors[0].new_zeros((len(tensors), max_c, max_h, max_w))
    for img, pad in zip(tensors, batched):
        pad[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    return ImageList(batched, [t.shape[-2:] for t in tensors])
