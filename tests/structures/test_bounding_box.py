"""BoxList and box ops against the hand-worked checks of framework.md section 12."""
import pytest
import torch

from atss_core.structures.bounding_box import BoxList
from atss_core.structures.boxlist_ops import box_iou, boxlist_iou, cat_boxlist, iou_and_giou, remove_small_boxes
from atss_core.structures.image_list import to_image_list


def test_coco_xywh_roundtrip_plus_one():
    b = BoxList(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (640, 480), mode="xywh")
    xyxy = b.convert("xyxy")
    assert xyxy.bbox.tolist() == [[10, 20, 39, 59]]
    assert xyxy.convert("xywh").bbox.tolist() == [[10, 20, 30, 40]]


def test_coco_xywh_roundtrip_continuous():
    b = BoxList(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (640, 480), mode="xywh", box_offset=0)
    assert b.convert("xyxy").bbox.tolist() == [[10, 20, 40, 60]]
    assert b.convert("xyxy").area().item() == 1200


def test_width_one_box_is_removed_but_one_and_half_is_kept():
    b = BoxList(torch.tensor([[5.0, 5.0, 1.0, 10.0], [5.0, 5.0, 1.5, 10.0]]), (64, 64), mode="xywh")
    kept = b.convert("xyxy").clip_to_image(remove_empty=True)
    assert len(kept) == 1
    assert kept.bbox[0, 2].item() == pytest.approx(5.5)


def test_clip():
    b = BoxList(torch.tensor([[-5.0, 3.0, 700.0, 500.0]]), (640, 480))
    assert b.clip_to_image(remove_empty=False).bbox.tolist() == [[0, 3, 639, 479]]


def test_resize_separate_ratios():
    b = BoxList(torch.tensor([[10.0, 20.0, 39.0, 59.0]]), (640, 480))
    b.add_field("labels", torch.tensor([3]))
    r = b.resize((1066, 800))
    assert r.bbox[0].tolist() == pytest.approx([16.65625, 33.33333, 64.959375, 98.33333], abs=1e-4)
    assert r.size == (1066, 800)
    assert r.get_field("labels").tolist() == [3]


def test_flip():
    b = BoxList(torch.tensor([[16.65625, 33.3333, 64.959375, 98.3333]]), (1066, 800))
    f = b.transpose(0)
    assert f.bbox[0, 0].item() == pytest.approx(1000.040625, abs=1e-4)
    assert f.bbox[0, 2].item() == pytest.approx(1048.34375, abs=1e-4)
    # flipping twice is the identity
    assert torch.allclose(f.transpose(0).bbox, b.bbox)


def test_iou_plus_one_and_area():
    a = BoxList(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), (20, 20))
    b = BoxList(torch.tensor([[5.0, 5.0, 14.0, 14.0]]), (20, 20))
    assert boxlist_iou(a, b).item() == pytest.approx(25 / 175, abs=1e-6)
    assert box_iou(a.bbox, b.bbox, box_offset=0).item() == pytest.approx(16 / 146, abs=1e-6)
    assert BoxList(torch.zeros(1, 4), (5, 5)).area().item() == 1


def test_iou_matches_torchvision_with_shift():
    from torchvision.ops import box_iou as tv_box_iou

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 50
    wh = torch.rand(30, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], dim=1).double()
    shift = torch.tensor([0, 0, 1, 1], dtype=torch.float64)
    expected = tv_box_iou(boxes + shift, boxes + shift)
    assert torch.allclose(box_iou(boxes, boxes, box_offset=1), expected)
    assert torch.allclose(box_iou(boxes, boxes, box_offset=0), tv_box_iou(boxes, boxes))


def test_iou_and_giou_match_torchvision_pairwise_and_aligned():
    from torchvision.ops import box_iou as tv_box_iou
    from torchvision.ops import generalized_box_iou as tv_giou

    g = torch.Generator().manual_seed(1)
    xy = torch.rand(12, 2, generator=g, dtype=torch.float64) * 50
    boxes = torch.cat([xy, xy + 1 + torch.rand(12, 2, generator=g, dtype=torch.float64) * 30], dim=1)
    others = boxes[:5] + torch.randn(5, 4, generator=g, dtype=torch.float64).clamp(-0.4, 0.4)
    iou, giou = iou_and_giou(boxes[:, None], others[None])  # (12, 5)
    assert torch.allclose(iou, tv_box_iou(boxes, others), atol=1e-12)
    assert torch.allclose(giou, tv_giou(boxes, others), atol=1e-12)
    iou, giou = iou_and_giou(boxes[:5], others)  # aligned pairs
    assert torch.allclose(iou, tv_box_iou(boxes[:5], others).diagonal(), atol=1e-12)
    assert torch.allclose(giou, tv_giou(boxes[:5], others).diagonal(), atol=1e-12)
    iou, giou = iou_and_giou(boxes[0], boxes[0])
    assert iou.item() == 1.0 and giou.item() == 1.0  # eps is a floor, not added: equal boxes give exactly 1


def test_iou_rejects_different_images():
    with pytest.raises(ValueError, match="same image"):
        boxlist_iou(BoxList(torch.zeros(1, 4), (5, 5)), BoxList(torch.zeros(1, 4), (6, 5)))


def test_cat_and_index_and_small_boxes():
    a = BoxList(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), (20, 20))
    a.add_field("scores", torch.tensor([0.5]))
    b = BoxList(torch.tensor([[1.0, 1.0, 1.0, 3.0]]), (20, 20))
    b.add_field("scores", torch.tensor([0.7]))
    c = cat_boxlist([a, b])
    assert len(c) == 2 and c.get_field("scores").tolist() == pytest.approx([0.5, 0.7])
    # width of box 1 is 1 under +1: kept at min_size 1, dropped at 2
    assert len(remove_small_boxes(c, 1)) == 2
    assert len(remove_small_boxes(c, 2)) == 1
    assert c[torch.tensor([False, True])].get_field("scores").tolist() == pytest.approx([0.7])


def test_bad_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        BoxList(torch.zeros(3, 5), (10, 10))


def test_to_image_list_pads_to_divisor():
    imgs = [torch.ones(3, 480, 640), torch.ones(3, 500, 300)]
    il = to_image_list(imgs, size_divisible=32)
    assert il.tensors.shape == (2, 3, 512, 640)
    assert il.image_sizes == [(480, 640), (500, 300)]
    assert il.tensors[1, :, :, 300:].abs().sum() == 0
    assert il.tensors[1, :, 500:, :].abs().sum() == 0
    assert to_image_list(il) is il
