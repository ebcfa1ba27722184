"""Data loaders from the config (framework spec 5.6-5.7). The only cfg reader of ``atss_core.data``."""
import bisect
import importlib
import importlib.util
import logging
import os
import random

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from atss_core.config import resolve_box_offset
from atss_core.config.validation import check_num_classes
from atss_core.utils import comm

from . import datasets as D
from . import samplers
from .collate import BatchCollator, BBoxAugCollator
from .transforms import build_transforms

_OWN_CATALOG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "paths_catalog.py")


def load_paths_catalog(path):
    """The catalog module at ``path`` (``cfg.PATHS_CATALOG``); must define ``DatasetCatalog``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PATHS_CATALOG file not found: {path}")
    if os.path.samefile(path, _OWN_CATALOG):
        return importlib.import_module("atss_core.config.paths_catalog")
    # A user catalog gets its own module name, leaving the package's module intact.
    spec = importlib.util.spec_from_file_location("atss_core_user_paths_catalog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "DatasetCatalog"):
        raise AttributeError(f"PATHS_CATALOG file {path} does not define DatasetCatalog")
    return module


def _split(is_train):
    return "TRAIN" if is_train else "TEST"


def _path_dataset_names(ann_files):
    """Names of the datasets given by path: the json file names, made unique."""
    names = []
    for ann_file in ann_files:
        stem = os.path.splitext(os.path.basename(ann_file))[0]
        name, n = stem, 1
        while name in names:
            n += 1
            name = f"{stem}_{n}"
        names.append(name)
    return names


def dataset_names(cfg, is_train):
    """Names of the train or test datasets: catalog names, then those given by path."""
    split = _split(is_train)
    names = cfg.DATASETS[split]
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"DATASETS.{split} must be a list of names, got {names!r}")
    return list(names) + _path_dataset_names(cfg.DATASETS[f"{split}_ANN_FILES"])


def dataset_entries(cfg, is_train):
    """``[(name, source, dict(factory=..., args=...))]`` for the train or test split.

    ``DATASETS.TRAIN``/``TEST`` names come from the paths catalog; then one
    COCO-format dataset per ``DATASETS.<split>_ANN_FILES`` entry with the
    image folder at the same position of ``DATASETS.<split>_IMG_DIRS``.
    ``source`` says where the entry came from, for error messages.
    """
    split = _split(is_train)
    ann_files, img_dirs = cfg.DATASETS[f"{split}_ANN_FILES"], cfg.DATASETS[f"{split}_IMG_DIRS"]
    if len(ann_files) != len(img_dirs):
        raise ValueError(
            f"DATASETS.{split}_ANN_FILES has {len(ann_files)} entries but DATASETS.{split}_IMG_DIRS has "
            f"{len(img_dirs)}; give one image folder per annotation file"
        )
    names = dataset_names(cfg, is_train)
    if not names:
        raise ValueError(
            f"DATASETS.{split} is empty; name at least one catalog dataset or give "
            f"DATASETS.{split}_ANN_FILES and DATASETS.{split}_IMG_DIRS"
        )
    num_catalog = len(cfg.DATASETS[split])
    entries = []
    if num_catalog:
        catalog = load_paths_catalog(cfg.PATHS_CATALOG).DatasetCatalog
        entries += [(name, f"DATASETS.{split}", catalog.get(name)) for name in names[:num_catalog]]
    for i, (name, ann_file, img_dir) in enumerate(zip(names[num_catalog:], ann_files, img_dirs)):
        source = f"DATASETS.{split}_ANN_FILES[{i}] / {split}_IMG_DIRS[{i}]"
        entries.append((name, source, dict(factory="COCODataset", args=dict(root=img_dir, ann_file=ann_file))))
    return entries


def build_dataset(entries, transforms, is_train=True, box_offset=1):
    """Datasets of ``entries`` (see ``dataset_entries``).

    Train: a one-element list (a ConcatDataset if several). Test: one dataset
    per entry. Training drops images without usable boxes. A missing file or
    folder is reported with the config key that named it.
    """
    built = []
    for name, source, entry in entries:
        factory = getattr(D, entry["factory"], None)
        if factory is None:
            raise ValueError(f"dataset {name!r}: unknown factory {entry['factory']!r} in the paths catalog")
        args = dict(entry["args"])
        if factory is D.COCODataset:
            args["remove_images_without_annotations"] = is_train
            args["box_offset"] = box_offset
        args["transforms"] = transforms
        try:
            built.append(factory(**args))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"dataset {name!r} from {source}: {e}") from None
    if not is_train:
        return built
    return [built[0] if len(built) == 1 else D.ConcatDataset(built)]


def make_data_sampler(dataset, shuffle, distributed):
    if distributed:
        return samplers.DistributedSampler(dataset, shuffle=shuffle)
    return RandomSampler(dataset) if shuffle else SequentialSampler(dataset)


def compute_aspect_groups(dataset, bins=(1,)):
    """Group id per image: ``bisect_right(bins, h / w)``; with bins (1,): 0 = landscape, 1 = portrait or square."""
    bins = sorted(bins)
    groups = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        groups.append(bisect.bisect_right(bins, float(info["height"]) / float(info["width"])))
    return groups


def make_batch_data_sampler(
    dataset, sampler, aspect_grouping, images_per_batch, num_iters=None, start_iter=0, pass_start=None
):
    if aspect_grouping:
        batch_sampler = samplers.GroupedBatchSampler(
            sampler, compute_aspect_groups(dataset, aspect_grouping), images_per_batch, drop_uneven=False
        )
    else:
        batch_sampler = BatchSampler(sampler, images_per_batch, drop_last=False)
    if num_iters is not None:
        batch_sampler = samplers.IterationBasedBatchSampler(batch_sampler, num_iters, start_iter, pass_start)
    return batch_sampler


def make_train_batch_sampler(dataset, aspect_grouping, global_batch, num_iters, start_iter=0, seed=0, pass_start=None):
    """(SeededDataset, ShardedBatchSampler): this process's share of seeded global batches (samplers/training.py)."""
    order = samplers.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    global_batches = make_batch_data_sampler(
        dataset, order, aspect_grouping, global_batch, num_iters, start_iter, pass_start
    )
    sharded = samplers.ShardedBatchSampler(global_batches, comm.get_rank(), comm.get_world_size(), seed)
    return samplers.SeededDataset(dataset), sharded


def images_per_process(total, world_size, key):
    """``total`` images per step split evenly over ``world_size`` processes."""
    if total <= 0 or total % world_size != 0:
        raise ValueError(
            f"{key} ({total}) must be a positive multiple of the number of processes ({world_size})"
        )
    return total // world_size


def seed_worker(worker_id):
    """Seed Python ``random`` (scale choice, flip) from the worker's torch seed (base seed + worker id)."""
    random.seed(torch.initial_seed() % 2**32)


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0, seed=None, pass_start=None):
    """Train: one DataLoader over ``SOLVER.MAX_ITER`` batches. Test: a list, one per ``dataset_names``.

    The active head's NUM_CLASSES must match every dataset's categories.

    Each batch is ``(ImageList, tuple of BoxList targets, tuple of dataset indices)``
    (raw images instead of an ImageList when test-time augmentation is on).
    Every dataset has ``categories`` (class names, index = label - 1).

    Training batches do not depend on the number of processes: ``seed``
    (default ``max(SEED, 0)``) fixes the order and the augmentations, and
    ``pass_start`` (a checkpoint's ``sampler["pass_start"]``) resumes the
    order exactly at ``start_iter``.
    """
    world_size = comm.get_world_size()
    if is_train:
        ims = images_per_process(cfg.SOLVER.IMS_PER_BATCH, world_size, "SOLVER.IMS_PER_BATCH")
        num_iters = cfg.SOLVER.MAX_ITER
    else:
        ims = images_per_process(cfg.TEST.IMS_PER_BATCH, world_size, "TEST.IMS_PER_BATCH")
        # as the original: distributed evaluation shuffles (the gather re-sorts by index)
        shuffle, num_iters, start_iter = is_distributed, None, 0

    tta = not is_train and cfg.TEST.BBOX_AUG.ENABLED
    transforms = None if tta else build_transforms(cfg, is_train)
    entries = dataset_entries(cfg, is_train)
    datasets = build_dataset(entries, transforms, is_train, resolve_box_offset(cfg))
    names = [name for name, _, _ in entries]
    for name, dataset in zip(["+".join(names)] if is_train else names, datasets):
        check_num_classes(cfg, getattr(dataset, "categories", None), name)

    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []
    collator = BBoxAugCollator() if tta else BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY)
    loaders = []
    for dataset in datasets:
        if is_train:
            seed = max(cfg.SEED, 0) if seed is None else seed
            dataset, batch_sampler = make_train_batch_sampler(
                dataset, aspect_grouping, cfg.SOLVER.IMS_PER_BATCH, num_iters, start_iter, seed, pass_start
            )
        else:
            sampler = make_data_sampler(dataset, shuffle, is_distributed)
            batch_sampler = make_batch_data_sampler(dataset, sampler, aspect_grouping, ims, num_iters, start_iter)
        loaders.append(
            DataLoader(
                dataset,
                batch_sampler=batch_sampler,
                collate_fn=collator,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                worker_init_fn=seed_worker,
            )
        )
    logging.getLogger(__name__).info(
        "%s data: %s with %s images", "train" if is_train else "test", list(names), [len(d) for d in datasets]
    )
    if is_train:
        return loaders[0]
    return loaders
