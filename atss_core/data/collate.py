"""Collate functions: pad a batch into an ``ImageList`` (framework spec 5.5)."""
from atss_core.structures.image_list import to_image_list


class BatchCollator:
    """``[(img (3, H, W), target, idx), ...]`` -> ``(ImageList, targets tuple, idx tuple)``.

    Images are zero-padded bottom/right to the batch maximum, rounded up to a
    multiple of ``size_divisible`` (if > 0).
    """

    def __init__(self, size_divisible=0):
        self.size_divisible = size_divisible

    def __call__(self, batch):
        images, targets, idxs = zip(*batch)
        return to_image_list(list(images), self.size_divisible), targets, idxs


class BBoxAugCollator:
    """No batching: test-time augmentation resizes raw PIL images itself.

    Returns ``(images, targets, idxs)`` tuples.
    """

    def __call__(self, batch):
        return list(zip(*batch))
