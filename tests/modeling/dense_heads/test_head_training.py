"""Train and eval flows shared by the Dynamic ATSS, FCOS and RetinaNet heads: one-gt and
zero-gt images (C16, spec C23), low precision (spec C18), detections."""
import pytest
import torch

HEADS = {
    "DYNAMIC_ATSS_ON": {"loss_cls", "loss_reg", "loss_IoU"},
    "FCOS_ON": {"loss_cls", "loss_reg", "loss_centerness"},
    "FCOS_ON imprv": {"loss_cls", "loss_reg", "loss_centerness"},
    "RETINANET_ON": {"loss_retina_cls", "loss_retina_reg"},
}


@pytest.mark.parametrize("name", HEADS)
def test_one_gt_image_next_to_a_zero_gt_image(name, small_head, feature_batch, boxes_target):
    head = small_head(name).train()
    images, feats = feature_batch()
    detections, losses = head(images, feats, [boxes_target([[10, 8, 50, 40]], [2]), boxes_target([], [])])
    assert detections is None and set(losses) == HEADS[name]
    assert all(torch.isfinite(v) and v.dtype == torch.float32 and v.dim() == 0 for v in losses.values())
    reg_key = [k for k in losses if k.endswith("_reg")][0]
    assert losses[reg_key].item() > 0  # the gt did get positives
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize("name", HEADS)
def test_batch_of_zero_gt_images_keeps_the_graph(name, small_head, feature_batch, boxes_target):
    head = small_head(name).train()
    losses = head(*feature_batch(), [boxes_target([], []), boxes_target([], [])])[1]
    cls_key = [k for k in losses if k.endswith("_cls")][0]
    assert torch.isfinite(losses[cls_key]) and losses[cls_key].item() > 0
    assert all(v.item() == 0 for k, v in losses.items() if k != cls_key)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert head.head.bbox_pred.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("name", HEADS)
def test_bfloat16_autocast_gives_finite_float32_losses(name, small_head, feature_batch, boxes_target):
    head = small_head(name)
    images, feats = feature_batch()
    targets = [boxes_target([[10, 8, 50, 40], [60, 20, 90, 60]], [2, 5]), boxes_target([[5, 5, 30, 30]], [1])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = head.train()(images, feats, targets)[1]
        detections = head.eval()(images, feats)[0]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert all(d.bbox.dtype == torch.float32 and torch.isfinite(d.bbox).all() for d in detections)


@pytest.mark.parametrize("name", HEADS)
def test_eval_detections(name, small_head, feature_batch):
    head = small_head(name, INFERENCE_TH=0.0).eval()
    images, feats = feature_batch()
    with torch.no_grad():
        detections, losses = head(images, feats)
    assert losses == {} and len(detections) == 2
    for det, (h, w) in zip(detections, images.image_sizes):
        assert det.size == (w, h) and 0 < len(det) <= 100 and set(det.fields()) == {"scores", "labels"}
        labels = det.get_field("labels")
        assert labels.dtype == torch.int64 and labels.min() >= 1 and labels.max() <= 5
        assert (det.bbox[:, 0::2] >= 0).all() and (det.bbox[:, 0::2] <= w - 1).all()
        assert (det.bbox[:, 1::2] >= 0).all() and (det.bbox[:, 1::2] <= h - 1).all()
