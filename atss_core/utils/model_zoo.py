"""Weight URIs -> local files (checkpoints.md §3.7-1, §4.2).

Accepted forms of ``MODEL.WEIGHT``:
- ``catalog://<name>``: ``ModelCatalog.get(name)`` of ``PATHS_CATALOG``;
- ``torchvision://<model>``: torchvision's ImageNet **V1** weights (never
  ``DEFAULT``/V2, a different recipe);
- ``open-mmlab://<name>`` (or ``openmmlab://``): the mmcv table below;
- ``http(s)://...``: downloaded once into :func:`model_cache_dir`;
- a local path.
"""
import importlib.util
import logging
import os
import re
from urllib.parse import urlparse

import torch

from .comm import is_main_process, synchronize

logger = logging.getLogger(__name__)

# "<name>-<sha256 prefix>.<ext>", as torch.hub names its files.
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")

_OPEN_MMLAB_ROOT = "https://download.openmmlab.com/pretrain/third_party/"
_OPEN_MMLAB = {
    "detectron/resnet50_caffe": "resnet50_caffe-788b5fa3.pth",
    "detectron/resnet101_caffe": "resnet101_caffe-3ad79236.pth",
    "detectron2/resnet50_caffe": "resnet50_msra-5891d200.pth",
    "detectron2/resnet101_caffe": "resnet101_msra-6cc46731.pth",
    "detectron2/resnext101_32x8d": "resnext101_32x8d-1516f1aa.pth",
    "resnext50_32x4d": "resnext50-32x4d-0ab1a123.pth",
    "resnext101_32x4d": "resnext101_32x4d-a5af3160.pth",
    "resnext101_64x4d": "resnext101_64x4d-ee2c6f71.pth",
}
# mmengine deprecated.json aliases.
_OPEN_MMLAB_ALIASES = {
    "resnet50_caffe": "detectron/resnet50_caffe",
    "resnet101_caffe": "detectron/resnet101_caffe",
}


def model_cache_dir():
    """``$TORCH_MODEL_ZOO`` if set (maskrcnn-benchmark's variable), else ``$TORCH_HOME/atss_core``.

    ``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``), as torch.hub.
    """
    if os.environ.get("TORCH_MODEL_ZOO"):
        return os.path.expanduser(os.environ["TORCH_MODEL_ZOO"])
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(xdg, "torch"))
    return os.path.join(os.path.expanduser(torch_home), "atss_core")


def cache_url(url, model_dir=None, progress=True):
    """Download ``url`` once to ``model_dir/<basename>`` and return that path.

    Only the main process downloads; the others wait at a barrier. A
    ``-<hex>.`` suffix of 6+ characters is checked as a sha256 prefix. When
    the download fails (e.g. offline), the error names the URL and the path
    where the file can be placed by hand.
    """
    model_dir = model_dir or model_cache_dir()
    filename = os.path.basename(urlparse(url).path)
    cached_file = os.path.join(model_dir, filename)
    if not os.path.exists(cached_file) and is_main_process():
        os.makedirs(model_dir, exist_ok=True)
        m = HASH_REGEX.search(filename)
        hash_prefix = m.group(1) if m and len(m.group(1)) >= 6 else None
        logger.info("downloading %s to %s", url, cached_file)
        try:
            torch.hub.download_url_to_file(url, cached_file, hash_prefix, progress=progress)
        except OSError as e:  # URLError/HTTPError/socket errors; hash mismatches propagate as is
            raise RuntimeError(
                f"could not download {url} ({e}). If this machine is offline, download the file elsewhere and "
                f"place it at {cached_file} (or set TORCH_HOME / TORCH_MODEL_ZOO, or point MODEL.WEIGHT at a local path)"
            ) from e
    synchronize()
    if not os.path.exists(cached_file):
        raise RuntimeError(f"{url} was not downloaded by the main process; expected it at {cached_file}")
    return cached_file


def torchvision_url(name):
    """URL of torchvision's ``IMAGENET1K_V1`` weights for ``name`` (e.g. resnet50 -> .../resnet50-0676ba61.pth)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise KeyError(f"torchvision://{name}: torchvision has no model named {name!r}") from e
    if "IMAGENET1K_V1" not in weights.__members__:
        raise KeyError(f"torchvision://{name}: torchvision has no IMAGENET1K_V1 weights for {name!r}")
    return weights.IMAGENET1K_V1.url


def open_mmlab_url(name):
    """URL of an ``open-mmlab://`` ImageNet backbone, after mmengine's deprecated aliases."""
    name = _OPEN_MMLAB_ALIASES.get(name, name)
    if name not in _OPEN_MMLAB:
        raise KeyError(
            f"open-mmlab://{name} is not a known ImageNet backbone (the *_caffe_bgr aliases have no file in "
            f"mmcv either); known: {', '.join(sorted(_OPEN_MMLAB) + sorted(_OPEN_MMLAB_ALIASES))}"
        )
    return _OPEN_MMLAB_ROOT + _OPEN_MMLAB[name]


def _model_catalog(paths_catalog):
    """``ModelCatalog`` from the file ``PATHS_CATALOG`` names (users may point to their own)."""
    if paths_catalog and os.path.isfile(paths_catalog):
        spec = importlib.util.spec_from_file_location("atss_core_paths_catalog", paths_catalog)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.ModelCatalog
    from atss_core.config.paths_catalog import ModelCatalog

    return ModelCatalog


def resolve_weight_uri(uri, paths_catalog=None):
    """Turn a ``MODEL.WEIGHT`` value into a local file path (downloading if needed)."""
    for scheme, to_url in (
        ("catalog://", lambda name: _model_catalog(paths_catalog).get(name)),
        ("torchvision://", torchvision_url),
        ("open-mmlab://", open_mmlab_url),
        ("openmmlab://", open_mmlab_url),
    ):
        if uri.startswith(scheme):
            target = to_url(uri[len(scheme):])
            logger.info("%s points to %s", uri, target)
            return resolve_weight_uri(target, paths_catalog)
    if uri.startswith(("http://", "https://")):
        return cache_url(uri)
    path = os.path.expanduser(uri)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weight file {uri!r} does not exist (MODEL.WEIGHT accepts a local file, http(s)://, catalog://, "
            "torchvision:// or open-mmlab://)"
        )
    return path
