"""Train and eval flows shared by the heads built on ``DenseHead``: one-gt and zero-gt images
(C16, spec C23), low precision (spec C18), detections. ATSS has its own, stricter tests."""
import pytest
import torch

# Head -> (loss keys, the box-regression key, the key that stays > 0 without gts).
HEADS = {
    "DYNAMIC_ATSS_ON": ({"loss_cls", "loss_reg", "loss_IoU"}, "loss_reg", "loss_cls"),
    "FCOS_ON": ({"loss_cls", "loss_reg", "loss_centerness"}, "loss_reg", "loss_cls"),
    "FCOS_ON imprv": ({"loss_cls", "loss_reg", "loss_centerness"}, "loss_reg", "loss_cls"),
    "RETINANET_ON": ({"loss_retina_cls", "loss_retina_reg"}, "loss_retina_reg", "loss_retina_cls"),
    "DSLA_ON": ({"loss_cls", "loss_bbox"}, "loss_bbox", "loss_cls"),
    "DW_ON": ({"loss_cls_pos", "loss_loc", "loss_cls_neg"}, "loss_loc", "loss_cls_neg"),
    "DW_ON worefine": ({"loss_cls_pos", "loss_loc", "loss_cls_neg"}, "loss_loc", "loss_cls_neg"),
    "O2F_ON": ({"loss_cls", "loss_bbox"}, "loss_bbox", "loss_cls"),
}


@pytest.mark.parametrize("name", HEADS)
def test_one_gt_image_next_to_a_zero_gt_image(name, small_head, feature_batch, boxes_target):
    head = small_head(name).train()
    images, feats = feature_batch()
    detections, losses = head(images, feats, [boxes_target([[10, 8, 50, 40]], [2]), boxes_target([], [])])
    keys, reg_key, _ = HEADS[name]
    assert detections is None and set(losses) == keys
    assert all(torch.isfinite(v) and v.dtype == torch.float32 and v.dim() == 0 for v in losses.values())
    assert losses[reg_key].item() > 0  # the gt did get positives
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize("name", HEADS)
def test_batch_of_zero_gt_images_keeps_the_graph(name, small_head, feature_batch, boxes_target):
    head = small_head(name).train()
    losses = head(*feature_batch(), [boxes_target([], []), boxes_target([], [])])[1]
    cls_key = HEADS[name][2]
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
        # Clipped to the last pixel (+1 convention) or to the image border (mmdet heads).
        right, bottom = w - det.box_offset, h - det.box_offset
        assert (det.bbox[:, 0::2] >= 0).all() and (det.bbox[:, 0::2] <= right).all()
        assert (det.bbox[:, 1::2] >= 0).all() and (det.bbox[:, 1::2] <= bottom).all()
