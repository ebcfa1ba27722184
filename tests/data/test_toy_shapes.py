import filecmp
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from atss_core.data.datasets import COCODataset, toy_shapes
from atss_core.data.datasets.toy_shapes import ensure_toy_dataset, render_image

PARAMS = dict(num_train=32, num_val=8, seed=3, size=128)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "ds"
    return str(root), ensure_toy_dataset(str(root), **PARAMS)


def _load(paths):
    with open(paths["ann_file"]) as f:
        return json.load(f)


def test_same_seed_is_byte_identical(toy, tmp_path):
    root, _ = toy
    again = str(tmp_path / "again")
    ensure_toy_dataset(again, **PARAMS)
    cmp = filecmp.dircmp(root, again)
    files = [os.path.join(d, f) for d in ("train", "val", "annotations") for f in os.listdir(os.path.join(root, d))]
    assert len(files) == PARAMS["num_train"] + PARAMS["num_val"] + 2
    match, mismatch, errors = filecmp.cmpfiles(root, again, files + ["meta.json"], shallow=False)
    assert not mismatch and not errors and not cmp.left_only and not cmp.right_only


def test_other_seed_differs(toy, tmp_path):
    _, (train, _) = toy
    other, _ = ensure_toy_dataset(str(tmp_path / "other"), **dict(PARAMS, seed=4))
    assert _load(other)["annotations"] != _load(train)["annotations"]


def test_coco_json_loads_and_evaluates(toy):
    _, (train, val) = toy
    for paths, n in ((train, PARAMS["num_train"]), (val, PARAMS["num_val"])):
        coco = COCO(paths["ann_file"])
        assert len(coco.imgs) == n
        assert sorted(coco.getCatIds()) == [1, 2, 3]
        assert [coco.cats[i]["name"] for i in (1, 2, 3)] == ["circle", "square", "triangle"]
    # the ground truth scored against itself is perfect, so the json is COCOeval-ready
    coco = COCO(val["ann_file"])
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
            for a in coco.dataset["annotations"]]
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_content_statistics(toy):
    _, (train, _) = toy
    data = _load(train)
    anns = data["annotations"]
    assert {a["category_id"] for a in anns} == {1, 2, 3}
    with_objects = {a["image_id"] for a in anns}
    empty = [im["id"] for im in data["images"] if im["id"] not in with_objects]
    assert 1 <= len(empty) <= 0.1 * len(data["images"])
    sides = np.array([max(a["bbox"][2:]) for a in anns])
    lo, hi = toy_shapes.object_side_range(PARAMS["size"])
    assert (lo, hi) == (8, 64)
    assert sides.max() <= hi and min(min(a["bbox"][2:]) for a in anns) >= 1
    assert (sides < 16).sum() >= 5  # small objects are common
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in anns)
    widths = [im["width"] for im in data["images"]]
    heights = [im["height"] for im in data["images"]]
    assert min(widths + heights) >= 112 and max(widths + heights) <= 160
    assert any(w > h for w, h in zip(widths, heights)) and any(w < h for w, h in zip(widths, heights))


def test_boxes_are_tight_around_drawn_pixels(toy):
    """Each object's exact colour, found in the written PNG, spans exactly its bbox."""
    _, (train, _) = toy
    data = _load(train)
    for image in data["images"][:12]:
        png = np.asarray(Image.open(os.path.join(train["root"], image["file_name"])).convert("RGB"))
        assert png.shape == (image["height"], image["width"], 3)
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        _, objects = render_image(PARAMS["seed"], "train", image["id"] - 1, PARAMS["size"])
        assert len(objects) == len(anns)
        for ann, obj in zip(anns, objects):
            ys, xs = np.nonzero(np.all(png == np.array(obj.color, dtype=np.uint8), axis=-1))
            x0, y0 = xs.min(), ys.min()
            assert ann["bbox"] == [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
            assert ann["area"] == len(xs)
            assert ann["area"] >= 0.5 * obj.full_area  # at least half visible
            assert ann["category_id"] == obj.category_id


def test_dataset_reads_toy_split(toy):
    _, (train, _) = toy
    ds = COCODataset(train["ann_file"], train["root"], remove_images_without_annotations=True)
    assert ds.categories == ["circle", "square", "triangle"]
    assert len(ds) < PARAMS["num_train"]  # empty images are filtered for training
    img, target, _ = ds[0]
    ann = [a for a in _load(train)["annotations"] if a["image_id"] == ds.id_to_img_map[0]]
    x, y, w, h = ann[0]["bbox"]
    assert target.bbox[0].tolist() == [x, y, x + w - 1, y + h - 1]
    assert img.size == target.size


def test_existing_dataset_reused_and_mismatch_rejected(toy, tmp_path):
    root, _ = toy
    stamp = os.stat(os.path.join(root, "meta.json")).st_mtime_ns
    ensure_toy_dataset(root, **PARAMS)
    assert os.stat(os.path.join(root, "meta.json")).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="was generated with"):
        ensure_toy_dataset(root, **dict(PARAMS, num_val=9))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("x")
    with pytest.raises(RuntimeError, match="not a complete toy dataset"):
        ensure_toy_dataset(str(junk), num_train=1, num_val=1)
    with pytest.raises(ValueError, match="size"):
        ensure_toy_dataset(str(tmp_path / "bad"), size=8)


def test_concurrent_generation(tmp_path):
    root = str(tmp_path / "shared")
    results, errors = [], []

    def work():
        try:
            results.append(ensure_toy_dataset(root, num_train=4, num_val=2, seed=1, size=64))
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert sorted(os.listdir(tmp_path)) == ["shared"]  # no temporary directory left behind
    assert len(os.listdir(os.path.join(root, "train"))) == 4


def test_default_root_and_named_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("ATSS_CORE_DATA", str(tmp_path))
    paths = ensure_toy_dataset(num_train=2, num_val=1)
    base = os.path.join(str(tmp_path), "toy_shapes")
    assert paths.val == paths[1] == dict(root=os.path.join(base, "val"),
                                         ann_file=os.path.join(base, "annotations", "toy_shapes_val.json"))
    train, val = paths
    assert train["root"] == os.path.join(base, "train") and os.path.isfile(val["ann_file"])


def test_cli(monkeypatch, tmp_path, capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_toy_dataset.py")
    spec = importlib.util.spec_from_file_location("make_toy_dataset", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "cli"
    cli.main(["--out", str(out), "--num-train", "3", "--num-val", "2", "--seed", "5", "--size", "64"])
    assert len(os.listdir(out / "train")) == 3 and len(os.listdir(out / "val")) == 2
    with open(out / "meta.json") as f:
        assert json.load(f) == dict(version=toy_shapes.VERSION, num_train=3, num_val=2, seed=5, size=64)
    assert str(out / "annotations" / "toy_shapes_val.json") in capsys.readouterr().out
