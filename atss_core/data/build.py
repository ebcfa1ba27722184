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


def build_dataset(dataset_list, transforms, dataset_catalog, is_train=True, box_offset=1):
    """Datasets named in ``dataset_list``.

    Train: a one-element list (a ConcatDataset if several names). Test: one
    dataset per name. Training drops images without usable boxes.
    """
    if isinstance(dataset_list, str) or not isinstance(dataset_list, (list, tuple)):
        raise ValueError(f"DATASETS.{'TRAIN' if is_train else 'TEST'} must be a list of names, got {dataset_list!r}")
    if not dataset_list:
        raise ValueError(f"DATASETS.{'TRAIN' if is_train else 'TEST'} is empty; name at least one catalog dataset")
    built = []
    for name in dataset_list:
        entry = dataset_catalog.get(name)
        factory = getattr(D, entry["factory"], None)
        if factory is None:
            raise ValueError(f"dataset {name!r}: unknown factory {entry['factory']!r} in the paths catalog")
        args = dict(entry["args"])
        if factory is D.COCODataset:
            args["remove_images_without_annotations"] = is_train
            args["box_offset"] = box_offset
        args["transforms"] = transforms
        built.append(factory(**args))
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


def make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_batch, num_iters=None, start_iter=0):
    if aspect_grouping:
        batch_sampler = samplers.GroupedBatchSampler(
            sampler, compute_aspect_groups(dataset, aspect_grouping), images_per_batch, drop_uneven=False
        )
    else:
        batch_sampler = BatchSampler(sampler, images_per_batch, drop_last=False)
    if num_iters is not None:
        batch_sampler = samplers.IterationBasedBatchSampler(batch_sampler, num_iters, start_iter)
    return batch_sampler


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


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0):
    """Train: one DataLoader over ``SOLVER.MAX_ITER`` batches. Test: a list, one per ``DATASETS.TEST`` name.

    Each batch is ``(ImageList, tuple of BoxList targets, tuple of dataset indices)``
    (raw images instead of an ImageList when test-time augmentation is on).
    Every dataset has ``categories`` (class names, index = label - 1).
    """
    world_size = comm.get_world_size()
    if is_train:
        ims = images_per_process(cfg.SOLVER.IMS_PER_BATCH, world_size, "SOLVER.IMS_PER_BATCH")
        shuffle, num_iters = True, cfg.SOLVER.MAX_ITER
    else:
        ims = images_per_process(cfg.TEST.IMS_PER_BATCH, world_size, "TEST.IMS_PER_BATCH")
        # as the original: distributed evaluation shuffles (the gather re-sorts by index)
        shuffle, num_iters, start_iter = is_distributed, None, 0

    catalog = load_paths_catalog(cfg.PATHS_CATALOG).DatasetCatalog
    tta = not is_train and cfg.TEST.BBOX_AUG.ENABLED
    transforms = None if tta else build_transforms(cfg, is_train)
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    datasets = build_dataset(names, transforms, catalog, is_train, resolve_box_offset(cfg))

    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []
    collator = BBoxAugCollator() if tta else BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY)
    loaders = []
    for dataset in datasets:
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
