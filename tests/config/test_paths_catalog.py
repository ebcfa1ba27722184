import os

import pytest

from atss_core.config.paths_catalog import DatasetCatalog, ModelCatalog, toy_shapes_root
from atss_core.data.datasets import toy_shapes

# framework spec 5.1 table
COCO_TABLE = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test_dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
    "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
    "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
    "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
}


@pytest.mark.parametrize("name", sorted(COCO_TABLE))
def test_coco_entries_default_root(name, monkeypatch):
    monkeypatch.delenv("ATSS_CORE_DATA", raising=False)
    entry = DatasetCatalog.get(name)
    img_dir, ann = COCO_TABLE[name]
    assert entry == dict(factory="COCODataset", args=dict(root=f"datasets/{img_dir}", ann_file=f"datasets/{ann}"))


def test_coco_entry_env_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ATSS_CORE_DATA", str(tmp_path))
    args = DatasetCatalog.get("coco_2017_val")["args"]
    assert args["root"] == os.path.join(str(tmp_path), "coco/val2017")
    assert args["ann_file"] == os.path.join(str(tmp_path), "coco/annotations/instances_val2017.json")


@pytest.mark.parametrize("name", ["coco_2099_train", "voc_2007_train", "keypoints_coco_2014_train", ""])
def test_unknown_dataset_lists_known_names(name):
    with pytest.raises(KeyError) as err:
        DatasetCatalog.get(name)
    msg = str(err.value)
    assert repr(name) in msg and "coco_2017_train" in msg and "toy_shapes_val" in msg


def test_toy_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("ATSS_CORE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert toy_shapes_root() == os.path.join(str(tmp_path), ".cache", "atss_core", "toy_shapes")
    monkeypatch.setenv("ATSS_CORE_DATA", "/data/x")
    assert toy_shapes_root() == os.path.join("/data/x", "toy_shapes")


def test_toy_entries_generated_once(monkeypatch, tmp_path):
    monkeypatch.setenv("ATSS_CORE_DATA", str(tmp_path))
    monkeypatch.setitem(toy_shapes.DEFAULTS, "num_train", 4)
    monkeypatch.setitem(toy_shapes.DEFAULTS, "num_val", 2)
    val = DatasetCatalog.get("toy_shapes_val")
    train = DatasetCatalog.get("toy_shapes_train")
    base = os.path.join(str(tmp_path), "toy_shapes")
    assert val["factory"] == train["factory"] == "COCODataset"
    assert train["args"]["root"] == os.path.join(base, "train")
    assert val["args"]["ann_file"] == os.path.join(base, "annotations", "toy_shapes_val.json")
    assert sorted(os.listdir(train["args"]["root"])) == [f"{i:06d}.png" for i in range(4)]
    assert len(os.listdir(val["args"]["root"])) == 2
    stamp = os.stat(val["args"]["ann_file"]).st_mtime_ns
    DatasetCatalog.get("toy_shapes_val")
    assert os.stat(val["args"]["ann_file"]).st_mtime_ns == stamp  # reused, not regenerated


URL = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"


@pytest.mark.parametrize(
    "name, path",
    [
        ("MSRA/R-50", "MSRA/R-50.pkl"),
        ("MSRA/R-50-GN", "47261647/R-50-GN.pkl"),
        ("MSRA/R-101", "MSRA/R-101.pkl"),
        ("MSRA/R-101-GN", "47592356/R-101-GN.pkl"),
        ("FAIR/20171220/X-101-32x8d", "20171220/X-101-32x8d.pkl"),
        ("FAIR/20171220/X-101-64x4d", "FBResNeXt/X-101-64x4d.pkl"),
    ],
)
def test_model_catalog(name, path):
    assert ModelCatalog.get("ImageNetPretrained/" + name) == URL + path
    assert ModelCatalog.get("catalog://ImageNetPretrained/" + name) == URL + path


@pytest.mark.parametrize("name", ["ImageNetPretrained/MSRA/R-152", "Caffe2Detectron/COCO/35857197/e2e", "MSRA/R-50"])
def test_model_catalog_unknown(name):
    with pytest.raises(KeyError, match="ImageNetPretrained/MSRA/R-50"):
        ModelCatalog.get(name)
