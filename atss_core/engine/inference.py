"""Run a detector over a test loader, gather across ranks, evaluate (framework spec 7.1)."""
import datetime
import logging
import os
import time

import torch
from tqdm import tqdm

from atss_core.data import make_data_loader
from atss_core.data.build import dataset_names
from atss_core.engine.tta import TestTimeAugmentation
from atss_core.evaluation.coco import do_coco_evaluation
from atss_core.utils.comm import all_gather, get_world_size, is_main_process, synchronize
from atss_core.utils.miscellaneous import atomic_write, mkdir, unwrap_model

logger = logging.getLogger(__name__)


def boxlist_to_record(boxlist):
    """A BoxList as plain tensors, so ``predictions.pth`` loads with ``weights_only=True``.

    Returns ``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N], "size": (w, h),
    "box_offset": int}``.
    """
    boxlist = boxlist.convert("xyxy")
    return {
        "boxes": boxlist.bbox,
        "scores": boxlist.get_field("scores"),
        "labels": boxlist.get_field("labels"),
        "size": tuple(boxlist.size),
        "box_offset": boxlist.box_offset,
    }


def _num_local_images(data_loader):
    sampler = getattr(getattr(data_loader, "batch_sampler", None), "sampler", None)
    try:
        return len(sampler)
    except TypeError:
        return None


def compute_on_dataset(model, data_loader, device, im_detect=None, desc=None):
    """Records of this rank's images keyed by dataset index, and the model time (s).

    ``im_detect(model, images, device) -> list[BoxList]`` replaces the plain
    forward (e.g. test-time augmentation); by default ``model(images.to(device))``.
    Rank 0 shows a progress bar with images/s (``desc`` names it).
    """
    model.eval()
    device = torch.device(device)
    results, model_time = {}, 0.0
    progress = tqdm(
        total=_num_local_images(data_loader), desc=desc, unit="img", mininterval=1.0, disable=not is_main_process()
    )
    with torch.no_grad(), progress:
        for images, _, image_ids in data_loader:
            start = time.perf_counter()
            if im_detect is not None:
                outputs = im_detect(model, images, device)
            else:
                outputs = model(images.to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            model_time += time.perf_counter() - start
            for image_id, output in zip(image_ids, outputs):
                results[int(image_id)] = boxlist_to_record(output.to(torch.device("cpu")))
            progress.update(len(image_ids))
    return results, model_time


def accumulate_predictions(per_rank_results, num_images):
    """Merge the per-rank dicts into a list indexed by dataset index.

    Indices repeated by the distributed sampler's padding collapse; a missing
    index is logged and left as ``None``.
    """
    merged = {}
    for part in per_rank_results:
        merged.update(part)
    missing = [i for i in range(num_images) if i not in merged]
    if missing:
        logger.warning(
            "%d of %d images have no prediction (first: %s); evaluation may be incomplete",
            len(missing),
            num_images,
            missing[:10],
        )
    return [merged.get(i) for i in range(num_images)]


def _log_time(label, seconds, num_images, world):
    per_image = seconds * world / max(num_images, 1)
    logger.info(
        "%s: %s (%.4f s / img per device, on %d devices; %.2f img/s in all)",
        label,
        datetime.timedelta(seconds=int(seconds)),
        per_image,
        world,
        num_images / max(seconds, 1e-9),
    )


def inference(
    model,
    data_loader,
    dataset_name,
    device="cuda",
    expected_results=(),
    expected_results_sigma_tol=4,
    output_folder=None,
    im_detect=None,
):
    """Predict every image of ``data_loader.dataset`` and evaluate on rank 0.

    Writes ``predictions.pth`` (a list of records, see ``boxlist_to_record``)
    and the COCO outputs to ``output_folder`` when given. Returns the
    ``COCOResults`` on rank 0 and ``None`` on the other ranks.
    """
    dataset = data_loader.dataset
    world = get_world_size()
    logger.info("Start evaluation on %s dataset (%d images).", dataset_name, len(dataset))
    start = time.perf_counter()
    local_results, model_time = compute_on_dataset(model, data_loader, device, im_detect, desc=dataset_name)
    synchronize()
    _log_time("Total run time", time.perf_counter() - start, len(dataset), world)
    _log_time("Model inference time", model_time, len(dataset), world)

    per_rank = all_gather(local_results)
    if not is_main_process():
        return None
    predictions = accumulate_predictions(per_rank, len(dataset))
    if output_folder:
        atomic_write(
            os.path.join(output_folder, "predictions.pth"), lambda f: torch.save(predictions, f), binary=True
        )
    return do_coco_evaluation(
        dataset,
        predictions,
        output_folder=output_folder,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
    )


def run_test(cfg, model, distributed=False, iteration=None):
    """Evaluate ``model`` on every ``cfg.DATASETS.TEST`` set; results per dataset name.

    Outputs go to ``OUTPUT_DIR/inference/<name>/`` (``.../model_{iteration:07d}``
    for a periodic evaluation during training). ``TEST.BBOX_AUG.ENABLED``
    switches to test-time augmentation. Must run on every rank.
    Returns ``{name: COCOResults}`` on rank 0 and ``{}`` elsewhere.
    """
    model = unwrap_model(model)
    if str(cfg.MODEL.DEVICE).startswith("cuda"):
        torch.cuda.empty_cache()
    im_detect = TestTimeAugmentation.from_config(cfg) if cfg.TEST.BBOX_AUG.ENABLED else None
    loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    all_results = {}
    for name, loader in zip(dataset_names(cfg, is_train=False), loaders):
        folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)
        if iteration is not None:
            folder = os.path.join(folder, f"model_{iteration:07d}")
        if is_main_process():
            mkdir(folder)
        results = inference(
            model,
            loader,
            dataset_name=name,
            device=cfg.MODEL.DEVICE,
            expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
            output_folder=folder,
            im_detect=im_detect,
        )
        synchronize()
        if results is not None:
            all_results[name] = results
    return all_results
