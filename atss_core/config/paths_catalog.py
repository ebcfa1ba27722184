"""Where datasets and ImageNet-pretrained weights live.

``cfg.PATHS_CATALOG`` points at this file; ``data/build.py`` loads it by path,
so a user can copy it, edit the entries and point the key at the copy. A
replacement must define ``DatasetCatalog.get(name)`` with the same contract.

Dataset paths are relative to the data root: the ``ATSS_CORE_DATA``
environment variable if set, else ``datasets`` in the working directory (as
sfzhang15/ATSS ``config/paths_catalog.py``). The toy-shapes entries are
generated on first use into a cache directory (see ``toy_shapes_root``).
"""
import os

DATA_ENV = "ATSS_CORE_DATA"


def data_root():
    """Root that the COCO paths are relative to (read at call time)."""
    return os.environ.get(DATA_ENV, "datasets")


def toy_shapes_root():
    """Cache directory of the generated toy-shapes dataset."""
    if os.environ.get(DATA_ENV):
        return os.path.join(os.environ[DATA_ENV], "toy_shapes")
    return os.path.join(os.path.expanduser("~"), ".cache", "atss_core", "toy_shapes")


class DatasetCatalog:
    """Dataset name -> ``dict(factory=<class name in atss_core.data.datasets>, args=...)``."""

    # name -> (image directory, annotation file), relative to data_root()
    COCO = {
        "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
        "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
        "coco_2017_test_dev": ("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
        "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
        "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
        "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
    }
    TOY = ("toy_shapes_train", "toy_shapes_val")

    @classmethod
    def names(cls):
        return sorted(cls.COCO) + list(cls.TOY)

    @classmethod
    def get(cls, name):
        if name in cls.COCO:
            img_dir, ann_file = cls.COCO[name]
            root = data_root()
            args = dict(root=os.path.join(root, img_dir), ann_file=os.path.join(root, ann_file))
            return dict(factory="COCODataset", args=args)
        if name in cls.TOY:
            # Imported here: generating images is only needed for these names.
            from atss_core.data.datasets import toy_shapes

            train, val = toy_shapes.ensure_toy_dataset(toy_shapes_root(), **toy_shapes.DEFAULTS)
            paths = train if name == "toy_shapes_train" else val
            return dict(factory="COCODataset", args=dict(paths))
        raise KeyError(f"dataset {name!r} is not in the paths catalog; known names: {', '.join(cls.names())}")


class ModelCatalog:
    """``catalog://`` weight names -> download URLs (framework spec 4.2)."""

    S3_C2_DETECTRON_URL = "https://dl.fbaipublicfiles.com/detectron"
    C2_IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "MSRA/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/20171220/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
        "FAIR/20171220/X-101-64x4d": "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
    }
    PREFIX = "ImageNetPretrained/"

    @classmethod
    def names(cls):
        return [cls.PREFIX + k for k in cls.C2_IMAGENET_MODELS]

    @classmethod
    def get(cls, name):
        """URL of ``name`` (with or without the ``catalog://`` scheme)."""
        key = name[len("catalog://"):] if name.startswith("catalog://") else name
        if key.startswith(cls.PREFIX) and key[len(cls.PREFIX):] in cls.C2_IMAGENET_MODELS:
            path = cls.C2_IMAGENET_MODELS[key[len(cls.PREFIX):]]
            return f"{cls.S3_C2_DETECTRON_URL}/{path}"
        raise KeyError(f"model {name!r} is not in the model catalog; known names: {', '.join(cls.names())}")
