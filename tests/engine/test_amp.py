"""Mixed precision (spec C18): autocast forward, float32 losses and finite heads; DTYPE names."""
import pytest
import torch

from atss_core.config import cfg as base_cfg
from atss_core.engine.trainer import make_grad_scaler, resolve_dtype
from atss_core.modeling.detector import build_detection_model
from atss_core.structures.bounding_box import BoxList
from atss_core.structures.image_list import to_image_list


def toy_detector(device):
    cfg = base_cfg.clone()
    cfg.merge_from_file("configs/quickstart/atss_toy.yaml")
    cfg.MODEL.DEVICE = str(device)
    torch.manual_seed(0)
    return build_detection_model(cfg).to(device)


def toy_batch(device):
    torch.manual_seed(1)
    images = to_image_list([torch.randn(3, 64, 64, device=device), torch.randn(3, 64, 96, device=device)], 32)
    targets = []
    gts = (([[4, 4, 40, 30]], [1], (64, 64)), ([[10, 8, 60, 50], [50, 2, 90, 20]], [2, 3], (96, 64)))
    for boxes, labels, size in gts:
        target = BoxList(torch.tensor(boxes, dtype=torch.float32, device=device), size)
        target.add_field("labels", torch.tensor(labels, device=device))
        targets.append(target)
    return images, targets


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_atss_losses_are_float32_and_finite_under_autocast(device, dtype):
    if device.type == "cpu" and dtype == torch.float16:
        pytest.skip("float16 autocast is a CUDA recipe")
    model = toy_detector(device).train()
    images, targets = toy_batch(device)
    with torch.autocast(device.type, dtype=dtype):
        losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_reg", "loss_centerness"}
    for name, loss in losses.items():
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
        detections = model(images)
    for det in detections:
        assert torch.isfinite(det.bbox).all() and torch.isfinite(det.get_field("scores")).all()


def test_dtype_names_and_scaler_choice():
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="DTYPE must be one of"):
        resolve_dtype("fp16")
    assert make_grad_scaler("float32", "cpu") is None and make_grad_scaler("bfloat16", "cpu") is None
    assert isinstance(make_grad_scaler("float16", "cpu"), torch.amp.GradScaler)
