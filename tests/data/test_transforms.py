import random

import numpy as np
import pytest
import torch
from PIL import Image

from atss_core.config import cfg as default_cfg
from atss_core.data.collate import BatchCollator
from atss_core.data.transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor, build_transforms
from atss_core.structures.bounding_box import BoxList

# framework spec 12, "Resize (MAX_SIZE_TRAIN = 1333) and padding to 32": (w, h), size, (h', w'), padded (h, w)
RESIZE_TABLE = [
    ((640, 480), 800, (800, 1066), (800, 1088)),
    ((640, 480), 640, (640, 853), (640, 864)),
    ((640, 427), 800, (800, 1199), (800, 1216)),
    ((480, 640), 800, (1066, 800), (1088, 800)),
    ((1000, 300), 800, (400, 1333), (416, 1344)),
    ((2000, 1000), 800, (666, 1332), (672, 1344)),
    ((1333, 800), 800, (800, 1333), (800, 1344)),
    ((612, 612), 800, (800, 800), (800, 800)),
    ((800, 1200), 800, (1200, 800), (1216, 800)),
]


@pytest.mark.parametrize("wh, size, resized, padded", RESIZE_TABLE)
def test_resize_and_pad_table(wh, size, resized, padded):
    resize = Resize((size,), 1333)
    assert resize.get_size(wh) == resized
    pipeline = Compose([resize, ToTensor()])
    target = BoxList(torch.tensor([[0.0, 0.0, wh[0] - 1, wh[1] - 1]]), wh)
    img, target = pipeline(Image.new("RGB", wh), target)
    assert tuple(img.shape[1:]) == resized
    assert target.size == (resized[1], resized[0])
    images, _, _ = BatchCollator(32)([(img, target, 0)])
    assert tuple(images.tensors.shape[2:]) == padded
    assert images.image_sizes == [resized]


def test_resize_target_uses_separate_ratios():
    # framework spec 12: 640x480 -> 1066x800 scales x by 1.665625 and y by 1.6666667
    target = BoxList(torch.tensor([[10.0, 20.0, 39.0, 59.0]]), (640, 480))
    img, out = Resize((800,), 1333)(Image.new("RGB", (640, 480)), target)
    assert img.size == (1066, 800)
    expected = torch.tensor([[16.65625, 33.333333, 64.959375, 98.333333]])
    torch.testing.assert_close(out.bbox, expected, rtol=0, atol=1e-4)


def test_resize_without_target_returns_image_only():
    out = Resize(100, 1000)(Image.new("RGB", (50, 40)))
    assert isinstance(out, Image.Image) and out.size == (125, 100)


def test_resize_draws_size_with_python_random():
    resize = Resize((100, 200), 10000)
    random.seed(0)
    seen = {min(resize.get_size((300, 400))) for _ in range(50)}
    assert seen == {100, 200}
    random.seed(123)
    a = [resize.get_size((300, 400)) for _ in range(10)]
    random.seed(123)
    assert a == [resize.get_size((300, 400)) for _ in range(10)]


def test_resize_tensor_image():
    img = torch.rand(3, 40, 50)
    out = Resize(80, 1000)(img)
    assert tuple(out.shape) == (3, 80, 100)


def test_flip_box_and_pixels():
    # framework spec 12: flip in a W = 1066 image
    target = BoxList(torch.tensor([[16.65625, 33.3333, 64.959375, 98.3333]]), (1066, 800))
    img = np.zeros((800, 1066, 3), dtype=np.uint8)
    img[5, 3] = (255, 0, 0)
    out_img, out = RandomHorizontalFlip(1.0)(Image.fromarray(img), target)
    torch.testing.assert_close(out.bbox[0, [0, 2]], torch.tensor([1000.040625, 1048.34375]), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.bbox[0, [1, 3]], target.bbox[0, [1, 3]])
    assert tuple(np.asarray(out_img)[5, 1066 - 1 - 3]) == (255, 0, 0)
    same_img, same = RandomHorizontalFlip(0.0)(Image.fromarray(img), target)
    assert torch.equal(same.bbox, target.bbox) and np.array_equal(np.asarray(same_img), img)


def _pixel_tensor(rgb):
    return ToTensor()(Image.fromarray(np.array([[rgb]], dtype=np.uint8)))


def test_normalize_caffe_recipe():
    # framework spec 12: RGB (255, 128, 0) -> BGR255 (0, 128, 255) -> minus the caffe mean
    out = Normalize([102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0], to_bgr255=True)(_pixel_tensor((255, 128, 0)))
    torch.testing.assert_close(out.flatten(), torch.tensor([-102.9801, 12.0535, 132.2283]), rtol=0, atol=1e-4)


def test_normalize_torchvision_recipe():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = Normalize(mean, std, to_bgr255=False)(_pixel_tensor((255, 128, 0)))
    expected = [(v / 255.0 - m) / s for v, m, s in zip((255, 128, 0), mean, std)]  # float64 reference
    torch.testing.assert_close(out.flatten().double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-5)


def test_normalize_rejects_bad_stats():
    with pytest.raises(ValueError, match="std"):
        Normalize([0, 0, 0], [1, 0, 1])


def test_build_transforms_train_range_and_flip():
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_RANGE_TRAIN = (640, 800)
    cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.25
    resize, flip, _, norm = build_transforms(cfg, is_train=True).transforms
    assert resize.min_size == tuple(range(640, 801)) and len(resize.min_size) == 161
    assert resize.max_size == 1333
    assert flip.prob == 0.25
    assert norm.to_bgr255 and norm.mean == [102.9801, 115.9465, 122.7717]


def test_build_transforms_train_list_and_test():
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_TRAIN = (600, 700)
    cfg.INPUT.MIN_SIZE_TEST = 500
    cfg.INPUT.MAX_SIZE_TEST = 900
    assert build_transforms(cfg, True).transforms[0].min_size == (600, 700)
    resize, flip, _, _ = build_transforms(cfg, False).transforms
    assert resize.min_size == (500,) and resize.max_size == 900 and flip.prob == 0.0


def test_build_transforms_bad_range():
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_RANGE_TRAIN = (800, 640)
    with pytest.raises(ValueError, match="MIN_SIZE_RANGE_TRAIN"):
        build_transforms(cfg, True)


def test_train_pipeline_end_to_end():
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 1.0
    img = Image.new("RGB", (32, 16), (0, 0, 0))
    target = BoxList(torch.tensor([[0.0, 0.0, 9.0, 15.0]]), (32, 16))
    out, t = build_transforms(cfg, True)(img, target)
    assert out.shape == (3, 64, 128) and out.dtype == torch.float32
    # black pixel -> minus the BGR mean; flipped box: x' = W - x - 1 after the 4x resize
    torch.testing.assert_close(out[:, 0, 0], -torch.tensor([102.9801, 115.9465, 122.7717]))
    torch.testing.assert_close(t.bbox, torch.tensor([[128 - 36 - 1.0, 0.0, 127.0, 60.0]]))
