import json

import pytest
import torch
from PIL import Image

from atss_core.config import cfg as default_cfg
from atss_core.data.datasets import COCODataset, ConcatDataset
from atss_core.data.transforms import build_transforms

# The 80 COCO json category ids: 1..90 without these ten.
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def _ann(ann_id, image_id, bbox, category_id=1, iscrowd=0):
    return dict(id=ann_id, image_id=image_id, bbox=bbox, category_id=category_id, iscrowd=iscrowd, area=1.0)


def write_coco(tmp_path, images, annotations, category_ids, name="ann.json"):
    """Images are (id, w, h); each gets a black PNG in tmp_path/img."""
    img_dir = tmp_path / "img"
    img_dir.mkdir(exist_ok=True)
    records = []
    for image_id, w, h in images:
        Image.new("RGB", (w, h)).save(img_dir / f"{image_id}.png")
        records.append(dict(id=image_id, file_name=f"{image_id}.png", width=w, height=h))
    coco = dict(
        images=records,
        annotations=annotations,
        categories=[dict(id=c, name=f"cat{c}") for c in category_ids],
    )
    ann_file = tmp_path / name
    ann_file.write_text(json.dumps(coco))
    return str(ann_file), str(img_dir)


@pytest.fixture
def small_coco(tmp_path):
    # image 7 (64x80): a normal box, w = 1 (dropped), w = 1.5 (kept), a crowd box (dropped)
    # image 3: only a crowd box; image 5: no annotations; image 9: only a w = 1 box
    images = [(7, 64, 80), (3, 50, 50), (5, 40, 30), (9, 40, 30)]
    anns = [
        _ann(1, 7, [10, 20, 30, 40], category_id=13),
        _ann(2, 7, [5, 5, 1, 10], category_id=90),
        _ann(3, 7, [5, 5, 1.5, 10], category_id=90),
        _ann(4, 7, [0, 0, 20, 20], category_id=1, iscrowd=1),
        _ann(5, 3, [0, 0, 20, 20], category_id=1, iscrowd=1),
        _ann(6, 9, [3, 3, 1, 5], category_id=1),
    ]
    return write_coco(tmp_path, images, anns, COCO_IDS)


def test_contiguous_category_mapping(small_coco):
    ds = COCODataset(*small_coco, remove_images_without_annotations=False)
    # framework spec 12 "Categories"
    expected = {1: 1, 11: 11, 13: 12, 27: 25, 44: 40, 90: 80}
    for json_id, contiguous in expected.items():
        assert ds.json_category_id_to_contiguous_id[json_id] == contiguous
        assert ds.contiguous_category_id_to_json_id[contiguous] == json_id
    assert len(ds.json_category_id_to_contiguous_id) == 80
    assert ds.categories[12 - 1] == "cat13" and len(ds.categories) == 80


def test_sorted_ids_and_img_info(small_coco):
    ds = COCODataset(*small_coco, remove_images_without_annotations=False)
    assert ds.ids == [3, 5, 7, 9]
    assert ds.id_to_img_map == {0: 3, 1: 5, 2: 7, 3: 9}
    info = ds.get_img_info(2)
    assert (info["width"], info["height"], info["id"]) == (64, 80, 7)


def test_boxes_labels_crowd_and_degenerate(small_coco):
    ds = COCODataset(*small_coco, remove_images_without_annotations=False)
    img, target, idx = ds[2]
    assert idx == 2 and img.size == (64, 80) and img.mode == "RGB"
    assert target.mode == "xyxy" and target.size == (64, 80) and target.box_offset == 1
    # [10, 20, 30, 40] -> [10, 20, 39, 59]; w = 1 dropped; w = 1.5 -> x2 = 5.5; crowd dropped
    torch.testing.assert_close(target.bbox, torch.tensor([[10.0, 20.0, 39.0, 59.0], [5.0, 5.0, 5.5, 14.0]]))
    labels = target.get_field("labels")
    assert labels.dtype == torch.int64 and labels.tolist() == [12, 80]
    _, crowd_only, _ = ds[0]
    assert len(crowd_only) == 0 and crowd_only.get_field("labels").dtype == torch.int64


def test_train_filter_keeps_crowd_only_images(small_coco):
    ds = COCODataset(*small_coco, remove_images_without_annotations=True)
    # 5 has no annotation and 9 only a w = 1 box; crowd-only 3 stays (as the original)
    assert ds.ids == [3, 7]
    _, target, _ = ds[1]
    assert len(target) == 2


def test_box_offset_zero(tmp_path):
    anns = [
        _ann(1, 1, [10, 20, 30, 40]),
        _ann(2, 1, [5, 5, 0.5, 10]),  # w < 1: dropped with o = 0
        _ann(3, 1, [5, 5, 1, 10]),
    ]
    ann_file, root = write_coco(tmp_path, [(1, 64, 80)], anns, [1])
    ds = COCODataset(ann_file, root, remove_images_without_annotations=True, box_offset=0)
    _, target, _ = ds[0]
    assert target.box_offset == 0
    torch.testing.assert_close(target.bbox, torch.tensor([[10.0, 20.0, 40.0, 60.0], [5.0, 5.0, 6.0, 15.0]]))


def test_transforms_applied(small_coco):
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_TEST = 128
    ds = COCODataset(*small_coco, remove_images_without_annotations=False, transforms=build_transforms(cfg, False))
    img, target, _ = ds[2]
    # 64x80 -> shorter side 128: exactly 2x, so boxes scale by 2
    assert tuple(img.shape) == (3, 160, 128)
    torch.testing.assert_close(target.bbox[0], torch.tensor([20.0, 40.0, 78.0, 118.0]))


def test_missing_paths_name_the_path(small_coco, tmp_path):
    ann_file, root = small_coco
    with pytest.raises(FileNotFoundError, match="nope.json"):
        COCODataset(str(tmp_path / "nope.json"), root, True)
    with pytest.raises(FileNotFoundError, match="no_images"):
        COCODataset(ann_file, str(tmp_path / "no_images"), True)


def test_concat_dataset(small_coco, tmp_path):
    a = COCODataset(*small_coco, remove_images_without_annotations=False)
    b = COCODataset(*small_coco, remove_images_without_annotations=True)
    cat = ConcatDataset([a, b])
    assert len(cat) == 6
    assert cat.get_img_info(4)["id"] == 3 and cat.get_img_info(5)["id"] == 7
    _, target, idx = cat[5]
    assert idx == 5 and len(target) == 2
    assert cat.categories == a.categories
    other = write_coco(tmp_path, [(1, 10, 10)], [], [1, 2], name="other.json")
    with pytest.raises(ValueError, match="categories"):
        ConcatDataset([a, COCODataset(*other, remove_images_without_annotations=False)])


def test_box_fates_are_counted_once_and_match_the_targets(tmp_path, caplog):
    # a 100x80 image; [x, y, w, h] -> fate under the +1 convention (hand-worked)
    anns = [
        _ann(1, 1, [10, 10, 20, 20]),  # kept as [10, 10, 29, 29]
        _ann(2, 1, [90, 70, 30, 30]),  # clipped: [90, 70, 119, 99] -> [90, 70, 99, 79]
        _ann(3, 1, [-5, 3, 20, 10]),  # clipped: x1 -5 -> 0
        _ann(4, 1, [5, 5, 0, 10]),  # zero width: dropped
        _ann(5, 1, [5, 5, -3, 10]),  # negative width: dropped
        _ann(6, 1, [5, 5, 10, 1]),  # h = 1 is empty under +1: dropped
        _ann(7, 1, [150, 10, 20, 20]),  # right of the image: dropped
        _ann(8, 1, [10, -40, 20, 20]),  # above the image: [10, -40, 29, -21] -> y 0..0, dropped
        _ann(9, 1, [0, 0, 50, 50], iscrowd=1),  # crowd: not counted
    ]
    ann_file, root = write_coco(tmp_path, [(1, 100, 80)], anns, [1])
    with caplog.at_level("INFO", logger="atss_core.data.datasets.coco"):
        ds = COCODataset(ann_file, root, remove_images_without_annotations=True)
    assert ds.box_stats == {"kept": 1, "clipped": 2, "degenerate": 3, "outside": 2}
    messages = [r.getMessage() for r in caplog.records if r.name == "atss_core.data.datasets.coco"]
    assert len(messages) == 1
    counts = "8 boxes: 2 clipped to the image, 3 dropped (width or height <= 1), 2 dropped (outside the image)"
    assert counts in messages[0]
    _, target, _ = ds[0]
    expected = torch.tensor([[10.0, 10.0, 29.0, 29.0], [90.0, 70.0, 99.0, 79.0], [0.0, 3.0, 14.0, 12.0]])
    torch.testing.assert_close(target.bbox, expected)
    # __getitem__ logs nothing more
    caplog.clear()
    ds[0]
    assert not [r for r in caplog.records if r.name == "atss_core.data.datasets.coco"]


def test_unreadable_image_is_replaced_with_a_warning(tmp_path, caplog, monkeypatch):
    images = [(1, 40, 30), (2, 50, 30), (3, 60, 30)]
    anns = [_ann(i, i, [1, 1, 10, 10], category_id=i) for i, _, _ in images]
    ann_file, root = write_coco(tmp_path, images, anns, [1, 2, 3])
    (tmp_path / "img" / "2.png").write_bytes(b"not a png")
    ds = COCODataset(ann_file, root, remove_images_without_annotations=False)
    draws = iter([1, 2])  # first the same bad image again, then a good one
    monkeypatch.setattr("atss_core.data.datasets.coco.random.randrange", lambda n: next(draws))
    with caplog.at_level("WARNING"):
        img, target, idx = ds[1]
    assert idx == 2 and img.size == (60, 30)
    assert target.get_field("labels").tolist() == [3]  # the target of the image actually returned
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "2.png" in warnings[0]  # warned once per file


def test_too_many_unreadable_images_is_a_clear_error(tmp_path):
    ann_file, root = write_coco(tmp_path, [(1, 40, 30), (2, 40, 30)], [_ann(1, 1, [1, 1, 10, 10])], [1])
    for name in ("1.png", "2.png"):
        (tmp_path / "img" / name).unlink()
    ds = COCODataset(ann_file, root, remove_images_without_annotations=False)
    with pytest.raises(RuntimeError, match=r"11 images in a row could not be read .*FileNotFoundError"):
        ds[0]


def test_bad_annotations_fail_at_construction(tmp_path):
    ann_file, root = write_coco(tmp_path, [(1, 40, 30)], [_ann(7, 1, [1, 1, 10, 10], category_id=5)], [1, 2])
    with pytest.raises(ValueError, match=r"annotation 7 has category_id 5, which is not in 'categories'"):
        COCODataset(ann_file, root, remove_images_without_annotations=False)
    ann_file, root = write_coco(tmp_path, [(1, 40, 30)], [_ann(8, 1, [1, 1, 10])], [1], name="short.json")
    with pytest.raises(ValueError, match=r"annotation 8 has bbox \[1, 1, 10\]"):
        COCODataset(ann_file, root, remove_images_without_annotations=False)
