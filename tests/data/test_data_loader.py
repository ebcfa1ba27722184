import os

import pytest
import torch

from atss_core.config import cfg as default_cfg
from atss_core.data import build as data_build
from atss_core.data import make_data_loader
from atss_core.data.build import images_per_process, load_paths_catalog
from atss_core.data.datasets.toy_shapes import ensure_toy_dataset
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import ImageList
from atss_core.utils import comm

CATALOG = '''
TRAIN = {train!r}
VAL = {val!r}


class DatasetCatalog:
    @staticmethod
    def get(name):
        return dict(factory="COCODataset", args=dict({{"tiny_train": TRAIN, "tiny_val": VAL}}[name]))
'''


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    train, val = ensure_toy_dataset(str(tmp / "toy"), num_train=10, num_val=5, seed=0, size=64)
    catalog = tmp / "my_catalog.py"
    catalog.write_text(CATALOG.format(train=train, val=val))
    cfg = default_cfg.clone()
    cfg.MODEL.ATSS_ON = True  # +1 box convention
    cfg.MODEL.ATSS.NUM_CLASSES = 4  # 3 toy categories + background
    cfg.PATHS_CATALOG = str(catalog)
    cfg.DATASETS.TRAIN = ("tiny_train",)
    cfg.DATASETS.TEST = ("tiny_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.DATALOADER.SIZE_DIVISIBILITY = 32
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 6
    cfg.TEST.IMS_PER_BATCH = 2
    return cfg


def _check_batch(images, targets, idxs, n_max):
    assert isinstance(images, ImageList)
    n, c, hp, wp = images.tensors.shape
    assert 1 <= n <= n_max and c == 3 and hp % 32 == 0 and wp % 32 == 0
    assert len(targets) == len(idxs) == n
    for (h, w), target in zip(images.image_sizes, targets):
        assert min(h, w) == 64 and h <= hp and w <= wp
        assert isinstance(target, BoxList) and target.size == (w, h) and target.box_offset == 1
        labels = target.get_field("labels")
        assert labels.dtype == torch.int64 and len(labels) == len(target)
        assert ((labels >= 1) & (labels <= 3)).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader(tiny_cfg, workers):
    cfg = tiny_cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = workers
    loader = make_data_loader(cfg, is_train=True)
    assert loader.dataset.categories == ["circle", "square", "triangle"]
    batches = list(loader)
    assert len(loader) == len(batches) == 6
    for images, targets, idxs in batches:
        _check_batch(images, targets, idxs, 2)
        assert all(len(t) > 0 for t in targets)  # empty toy images are filtered for training
        # aspect grouping: both images of a batch lie on the same side of h/w = 1
        infos = [loader.dataset.get_img_info(i) for i in idxs]
        assert len({info["height"] >= info["width"] for info in infos}) == 1


def test_train_loader_resume(tiny_cfg):
    assert len(list(make_data_loader(tiny_cfg, is_train=True, start_iter=4))) == 2


def test_test_loader(tiny_cfg):
    loaders = make_data_loader(tiny_cfg, is_train=False)
    assert isinstance(loaders, list) and len(loaders) == 1
    seen = []
    for images, targets, idxs in loaders[0]:
        _check_batch(images, targets, idxs, 2)
        seen += list(idxs)
    assert sorted(seen) == list(range(5))  # every val image, including empty ones, exactly once
    assert loaders[0].dataset.categories == ["circle", "square", "triangle"]


def test_test_loader_tta_gives_raw_images(tiny_cfg):
    cfg = tiny_cfg.clone()
    cfg.TEST.BBOX_AUG.ENABLED = True
    images, targets, idxs = next(iter(make_data_loader(cfg, is_train=False)[0]))
    assert all(hasattr(img, "size") and not isinstance(img, torch.Tensor) for img in images)


def test_batch_split():
    # framework spec 12 "Batch split"
    assert images_per_process(16, 8, "SOLVER.IMS_PER_BATCH") == 2
    assert images_per_process(16, 1, "SOLVER.IMS_PER_BATCH") == 16
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        images_per_process(16, 3, "SOLVER.IMS_PER_BATCH")


def test_loader_rejects_uneven_split(tiny_cfg, monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH \(2\)"):
        make_data_loader(tiny_cfg, is_train=True)
    with pytest.raises(ValueError, match="TEST.IMS_PER_BATCH"):
        make_data_loader(tiny_cfg, is_train=False)


def test_catalog_loading_errors(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="PATHS_CATALOG"):
        load_paths_catalog(str(tmp_path / "missing.py"))
    empty = tmp_path / "empty_catalog.py"
    empty.write_text("X = 1\n")
    with pytest.raises(AttributeError, match="DatasetCatalog"):
        load_paths_catalog(str(empty))
    import atss_core.config.paths_catalog as own

    assert load_paths_catalog(default_cfg.PATHS_CATALOG) is own
    cfg = tiny_cfg.clone()
    cfg.DATASETS.TRAIN = ()
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        make_data_loader(cfg, is_train=True)


def test_seed_worker_seeds_python_random(monkeypatch):
    import random

    monkeypatch.setattr(torch, "initial_seed", lambda: 1234)
    data_build.seed_worker(0)
    a = random.random()
    random.seed(1234)
    assert a == random.random()


def _own_data_cfg(tiny_cfg, tmp_path):
    """tiny_cfg with the toy splits given by path instead of by catalog name."""
    train, val = ensure_toy_dataset(str(tmp_path / "own"), num_train=4, num_val=3, seed=1, size=64)
    cfg = tiny_cfg.clone()
    cfg.PATHS_CATALOG = str(tmp_path / "no_catalog_needed.py")
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.DATASETS.TRAIN_ANN_FILES = (train["ann_file"],)
    cfg.DATASETS.TRAIN_IMG_DIRS = (train["root"],)
    cfg.DATASETS.TEST_ANN_FILES = (val["ann_file"], val["ann_file"])
    cfg.DATASETS.TEST_IMG_DIRS = (val["root"], val["root"])
    return cfg, train, val


def test_own_coco_data_by_path(tiny_cfg, tmp_path):
    cfg, train, val = _own_data_cfg(tiny_cfg, tmp_path)
    loader = make_data_loader(cfg, is_train=True)
    assert loader.dataset.ann_file == train["ann_file"]
    _check_batch(*next(iter(loader)), 2)
    tests = make_data_loader(cfg, is_train=False)
    assert [len(t.dataset) for t in tests] == [3, 3]
    # output folders are named after the json file, made unique
    stem = os.path.splitext(os.path.basename(val["ann_file"]))[0]
    assert data_build.dataset_names(cfg, is_train=False) == [stem, stem + "_2"]


def test_own_data_added_after_catalog_names(tiny_cfg, tmp_path):
    cfg, _, val = _own_data_cfg(tiny_cfg, tmp_path)
    cfg.PATHS_CATALOG = tiny_cfg.PATHS_CATALOG
    cfg.DATASETS.TEST = ("tiny_val",)
    names = [name for name, _, _ in data_build.dataset_entries(cfg, is_train=False)]
    assert names[0] == "tiny_val" and len(names) == 3
    assert [len(t.dataset) for t in make_data_loader(cfg, is_train=False)] == [5, 3, 3]


def test_own_data_errors_name_the_key(tiny_cfg, tmp_path):
    cfg, _, _ = _own_data_cfg(tiny_cfg, tmp_path)
    cfg.DATASETS.TRAIN_IMG_DIRS = ()
    with pytest.raises(ValueError, match=r"TRAIN_ANN_FILES has 1 entries but DATASETS.TRAIN_IMG_DIRS has 0"):
        make_data_loader(cfg, is_train=True)
    # reported when the loader is built, i.e. before the first iteration
    cfg.DATASETS.TRAIN_IMG_DIRS = (str(tmp_path / "no_such_dir"),)
    with pytest.raises(FileNotFoundError, match=r"TRAIN_ANN_FILES\[0\].*no_such_dir"):
        make_data_loader(cfg, is_train=True)
    cfg.DATASETS.TRAIN_ANN_FILES = (str(tmp_path / "missing.json"),)
    with pytest.raises(FileNotFoundError, match=r"TRAIN_ANN_FILES\[0\].*missing.json"):
        make_data_loader(cfg, is_train=True)


@pytest.mark.parametrize("is_train", [True, False])
def test_head_class_count_must_match_the_categories(tiny_cfg, is_train):
    cfg = tiny_cfg.clone()
    cfg.MODEL.ATSS.NUM_CLASSES = 81
    with pytest.raises(ValueError, match=r"MODEL.ATSS.NUM_CLASSES is 81 but dataset '\w+' has 3 categories"):
        make_data_loader(cfg, is_train=is_train)
    # Dynamic ATSS reads the ATSS keys
    cfg.MODEL.ATSS_ON, cfg.MODEL.DYNAMIC_ATSS_ON = False, True
    with pytest.raises(ValueError, match=r"set MODEL.ATSS.NUM_CLASSES 4"):
        make_data_loader(cfg, is_train=is_train)
