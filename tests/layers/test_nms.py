"""nms / ml_nms against kernels.md §7.1-§7.3, framework.md §12, atss_heads.md
C13, an independent pure-Python greedy NMS and torchvision.ops; on a GPU, the
CUDA kernels against the CPU kernels."""
import pytest
import torch
import torchvision

from atss_core.layers import ml_nms, nms
from atss_core.layers._ops import compiled_op, extension_info
from atss_core.layers.nms import ml_nms_reference, nms_reference

COMPILED = extension_info()["available"]
needs_compiled = pytest.mark.skipif(not COMPILED, reason="atss_core._C is not built")
needs_cuda_kernel = pytest.mark.skipif(
    not torch.cuda.is_available() or compiled_op("ml_nms", torch.device("cuda")) is None,
    reason="needs a GPU and a CUDA build",
)


def _op_nms(boxes, scores, thr, box_offset=1):
    return torch.ops.atss_core.nms(boxes, scores, float(thr), float(box_offset))


def _op_ml_nms(boxes, scores, labels, thr, box_offset=1):
    return torch.ops.atss_core.ml_nms(boxes, scores, labels, float(thr), float(box_offset))


# "op": the compiled CPU kernel itself; "wrapper": the public function;
# "reference": the pure-PyTorch fallback, called directly.
NMS_IMPLS = {"op": _op_nms, "wrapper": nms, "reference": nms_reference}
ML_NMS_IMPLS = {"op": _op_ml_nms, "wrapper": ml_nms, "reference": ml_nms_reference}


@pytest.fixture(params=sorted(NMS_IMPLS))
def impl(request):
    if request.param == "op" and not COMPILED:
        pytest.skip("atss_core._C is not built")
    return request.param


def run_nms(impl, boxes, scores, thr, box_offset=1):
    return NMS_IMPLS[impl](boxes, scores, thr, box_offset)


def run_ml_nms(impl, boxes, scores, labels, thr, box_offset=1):
    return ML_NMS_IMPLS[impl](boxes, scores, labels, thr, box_offset)


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# kernels.md §7.2 table.
BOXES4 = [[0, 0, 9, 9], [1, 1, 10, 10], [0, 0, 9, 4], [20, 20, 29, 29]]
SCORES4 = [0.9, 0.8, 0.7, 0.6]
# MRCNN tests/test_nms.py, also framework.md §12.
BOXES5 = [[10, 10, 50, 60], [11, 12, 48, 60], [8, 9, 40, 50], [100, 100, 150, 140], [99, 110, 155, 139]]
SCORES5 = [0.5, 0.7, 0.6, 0.9, 0.8]


# ---- an independent greedy NMS on Python floats (kernels.md §1.3) ----
def _py_iou(a, b, o):
    area_a = (a[2] - a[0] + o) * (a[3] - a[1] + o)
    area_b = (b[2] - b[0] + o) * (b[3] - b[1] + o)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + o)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + o)
    inter = w * h
    return inter / (area_a + area_b - inter)


def py_greedy_nms(boxes, scores, thr, box_offset=1, labels=None):
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = labels.tolist() if labels is not None else [0] * len(boxes)
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # Python's sort is stable
    removed, kept = set(), []
    for pos, i in enumerate(order):
        if i in removed:
            continue
        kept.append(i)
        for j in order[pos + 1 :]:
            if labels[j] == labels[i] and _py_iou(boxes[i], boxes[j], box_offset) > thr:
                removed.add(j)
    return sorted(kept)


def random_boxes(n, seed, dtype=torch.float64, centres=12):
    """Boxes clustered around a few centres, so that NMS has work to do."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(centres, 2, generator=g, dtype=dtype) * 300
    pick = torch.randint(0, centres, (n,), generator=g)
    xy = centre[pick] + torch.randn(n, 2, generator=g, dtype=dtype) * 6
    wh = 8 + torch.rand(n, 2, generator=g, dtype=dtype) * 60
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=1)


def legacy_iou_matrix(boxes):
    b = boxes.double()
    return torchvision.ops.box_iou(b + t([0, 0, 1, 1], torch.float64), b + t([0, 0, 1, 1], torch.float64))


def threshold_away_from(ious, candidates=(0.5, 0.45, 0.55, 0.4, 0.6, 0.35), margin=1e-4):
    """A threshold no IoU is within `margin` of (kernels.md §1.7 precondition)."""
    for thr in candidates:
        if (ious - thr).abs().min() > margin:
            return thr
    raise AssertionError("no threshold satisfies the precondition; change the seed")


# ---- §7.1 IoU, observed through the suppression decision ----
@pytest.mark.parametrize(
    "a, b, box_offset, iou",
    [
        ([0, 0, 9, 9], [5, 5, 14, 14], 1, 25 / 175),
        ([0, 0, 9, 9], [5, 5, 14, 14], 0, 16 / 146),
        ([0, 0, 10, 10], [10, 10, 20, 20], 1, 1 / 241),
        ([3, 3, 3, 3], [3, 3, 3, 3], 1, 1.0),
    ],
)
def test_iou_convention(impl, a, b, box_offset, iou):
    boxes, scores = t([a, b], torch.float64), t([0.9, 0.8], torch.float64)
    assert run_nms(impl, boxes, scores, iou - 1e-6, box_offset).tolist() == [0]
    assert run_nms(impl, boxes, scores, iou + 1e-6, box_offset).tolist() == [0, 1]


def test_touching_boxes_without_offset_never_suppress(impl):
    boxes, scores = t([[0, 0, 10, 10], [10, 10, 20, 20]]), t([0.9, 0.8])
    assert run_nms(impl, boxes, scores, 0.0, box_offset=0).tolist() == [0, 1]


# ---- §7.2 ----
@pytest.mark.parametrize(
    "thr, legacy, no_offset",
    [
        (0.3, [0, 3], [0, 3]),
        (0.5, [0, 2, 3], [0, 2, 3]),  # legacy IoU02 = 0.5 exactly is not > 0.5
        (0.66, [0, 2, 3], [0, 1, 2, 3]),
        (0.7, [0, 1, 2, 3], [0, 1, 2, 3]),
    ],
)
def test_four_box_table(impl, thr, legacy, no_offset):
    for dtype in (torch.float32, torch.float64):
        boxes, scores = t(BOXES4, dtype), t(SCORES4, dtype)
        assert run_nms(impl, boxes, scores, thr).tolist() == legacy
        assert run_nms(impl, boxes, scores, thr, box_offset=0).tolist() == no_offset


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.66, 0.7])
def test_four_box_table_matches_torchvision_with_shifted_boxes(impl, thr):
    boxes, scores = t(BOXES4), t(SCORES4)
    expected = torch.sort(torchvision.ops.nms(boxes + t([0, 0, 1, 1]), scores, thr)).values
    assert torch.equal(run_nms(impl, boxes, scores, thr), expected)


def test_output_is_in_ascending_index_order(impl):
    boxes, scores = t(BOXES4), t([0.6, 0.8, 0.7, 0.9])
    assert run_nms(impl, boxes, scores, 0.5).tolist() == [1, 2, 3]
    assert torchvision.ops.nms(boxes + t([0, 0, 1, 1]), scores, 0.5).tolist() == [3, 1, 2]


def test_equal_scores_lower_index_wins(impl):
    boxes, scores = t([[0, 0, 9, 9], [0, 0, 9, 9]]), t([0.5, 0.5])
    assert run_nms(impl, boxes, scores, 0.99).tolist() == [0]
    assert run_nms(impl, boxes, scores, 1.0).tolist() == [0, 1]  # IoU 1 is not > 1
    # The lower index also wins against the second box of a tie further down.
    boxes3 = t([[50, 50, 60, 60], [0, 0, 9, 9], [0, 0, 9, 9]])
    assert run_nms(impl, boxes3, t([0.3, 0.3, 0.3]), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize(
    "thr, expected", [(0.1, [1, 3]), (0.3, [1, 3]), (0.5, [1, 3]), (0.8, [1, 2, 3, 4]), (0.9, [0, 1, 2, 3, 4])]
)
def test_maskrcnn_benchmark_five_boxes(impl, thr, expected):
    boxes, scores = t(BOXES5), t(SCORES5)
    assert run_nms(impl, boxes, scores, thr).tolist() == expected
    assert run_nms(impl, boxes, scores, thr, box_offset=0).tolist() == expected


def test_empty_and_single(impl):
    keep = run_nms(impl, torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,) and keep.device.type == "cpu"
    keep = run_ml_nms(impl, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)
    assert run_nms(impl, t([[1, 2, 3, 4]]), t([0.1]), 0.5).tolist() == [0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("box_offset", [0, 1])
def test_matches_python_greedy_with_ties(impl, seed, box_offset):
    # float64 and the same formula: exact agreement with no precondition,
    # including tied scores (only 8 distinct values).
    boxes = random_boxes(250, seed)
    g = torch.Generator().manual_seed(100 + seed)
    scores = torch.randint(0, 8, (250,), generator=g).double() / 8
    for thr in (0.3, 0.5, 0.7):
        assert run_nms(impl, boxes, scores, thr, box_offset).tolist() == py_greedy_nms(boxes, scores, thr, box_offset)


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_torchvision_float32(impl, seed):
    boxes = random_boxes(400, seed, torch.float32)
    scores = torch.randperm(400, generator=torch.Generator().manual_seed(seed)).float() / 400  # distinct
    thr = threshold_away_from(legacy_iou_matrix(boxes))
    expected = torch.sort(torchvision.ops.nms(boxes + t([0, 0, 1, 1]), scores, thr)).values
    keep = run_nms(impl, boxes, scores, thr)
    assert 0 < len(keep) < 400
    assert torch.equal(keep, expected)


def test_dtypes_and_promotion():
    boxes, scores = random_boxes(120, 5), torch.rand(120, generator=torch.Generator().manual_seed(5))
    ref = nms(boxes.float(), scores.float(), 0.5)
    # float16/bfloat16 go through float32; compare with float32 on the same rounded values.
    for low in (torch.float16, torch.bfloat16):
        b, s = boxes.to(low), scores.to(low)
        assert torch.equal(nms(b, s, 0.5), nms(b.float(), s.float(), 0.5))
    assert torch.equal(nms(boxes.float(), scores.double(), 0.5), nms(boxes.double(), scores.double(), 0.5))
    assert ref.dtype == torch.int64


def test_output_does_not_require_grad():
    boxes = t(BOXES4).requires_grad_()
    scores = t(SCORES4).requires_grad_()
    for keep in (nms(boxes, scores, 0.5), ml_nms(boxes, scores, torch.ones(4, dtype=torch.long), 0.5)):
        assert not keep.requires_grad


def test_bad_inputs_give_clear_errors(impl):
    with pytest.raises((ValueError, RuntimeError), match=r"boxes must have shape \[N, 4\]"):
        run_nms(impl, torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises((ValueError, RuntimeError), match=r"scores must have shape \[N\]"):
        run_nms(impl, torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises((ValueError, RuntimeError), match=r"labels must have shape \[N\]"):
        run_ml_nms(impl, torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)


def test_bad_box_offset():
    with pytest.raises(ValueError, match="box_offset must be 0 or 1"):
        nms(t(BOXES4), t(SCORES4), 0.5, box_offset=2)
    if COMPILED:
        with pytest.raises(RuntimeError, match="box_offset must be 0 or 1"):
            _op_nms(t(BOXES4), t(SCORES4), 0.5, box_offset=0.5)


@needs_compiled
def test_op_rejects_half_and_mixed_dtypes():
    with pytest.raises(RuntimeError, match="float32 or float64"):
        _op_nms(t(BOXES4).half(), t(SCORES4).half(), 0.5)
    with pytest.raises(RuntimeError, match="dtype of boxes"):
        _op_nms(t(BOXES4), t(SCORES4, torch.float64), 0.5)


def test_wrapper_on_every_device(device):
    boxes, scores = t(BOXES4).to(device), t(SCORES4).to(device)
    keep = nms(boxes, scores, 0.5)
    assert keep.device.type == device.type and keep.tolist() == [0, 2, 3]
    labels = torch.tensor([1, 2, 1, 1], device=device)
    keep = ml_nms(boxes, scores, labels, 0.5)
    assert keep.device.type == device.type and keep.tolist() == [0, 1, 2, 3]


# ---- §7.3 multi-label ----
@pytest.mark.parametrize("thr, expected", [(0.3, [0, 1, 3]), (0.5, [0, 1, 2, 3])])
def test_ml_nms_four_boxes(impl, thr, expected):
    boxes, scores = t(BOXES4), t(SCORES4)
    for labels in (torch.tensor([1, 2, 1, 1]), torch.tensor([1, 2, 1, 1], dtype=torch.int32), t([1, 2, 1, 1])):
        assert run_ml_nms(impl, boxes, scores, labels, thr).tolist() == expected
    tv = torchvision.ops.batched_nms(boxes + t([0, 0, 1, 1]), scores, torch.tensor([1, 2, 1, 1]), thr)
    assert torch.sort(tv).values.tolist() == expected


def test_ml_nms_identical_boxes(impl):
    # framework.md §12 and atss_heads.md C13.
    boxes, scores = t([[0, 0, 9, 9], [0, 0, 9, 9]]), t([0.6, 0.9])
    assert run_ml_nms(impl, boxes, scores, torch.tensor([1, 2]), 0.6).tolist() == [0, 1]
    assert run_ml_nms(impl, boxes, scores, torch.tensor([3, 3]), 0.6).tolist() == [1]
    boxes = t([[0, 0, 9, 9], [0, 0, 9, 14]])  # +1 IoU = 100/150
    assert run_ml_nms(impl, boxes, t([0.9, 0.8]), torch.tensor([1, 1]), 0.6).tolist() == [0]
    assert run_ml_nms(impl, boxes, t([0.9, 0.8]), torch.tensor([1, 2]), 0.6).tolist() == [0, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_ml_nms_matches_python_greedy_with_ties(impl, seed):
    boxes = random_boxes(250, seed)
    g = torch.Generator().manual_seed(200 + seed)
    scores = torch.randint(0, 8, (250,), generator=g).double() / 8
    labels = torch.randint(1, 5, (250,), generator=g)
    for thr in (0.3, 0.6):
        expected = py_greedy_nms(boxes, scores, thr, 1, labels)
        assert run_ml_nms(impl, boxes, scores, labels, thr).tolist() == expected


@pytest.mark.parametrize("n", [300, 1200])  # torchvision: coordinate trick / per-class loop
def test_ml_nms_matches_torchvision_batched_nms(impl, n):
    boxes = random_boxes(n, n, torch.float32, centres=20)
    g = torch.Generator().manual_seed(n)
    scores = torch.randperm(n, generator=g).float() / n
    labels = torch.randint(1, 6, (n,), generator=g)
    same_label = labels[:, None] == labels[None, :]
    thr = threshold_away_from(legacy_iou_matrix(boxes)[same_label])
    expected = torch.sort(torchvision.ops.batched_nms(boxes + t([0, 0, 1, 1]), scores, labels, thr)).values
    assert torch.equal(run_ml_nms(impl, boxes, scores, labels, thr), expected)


def test_ml_nms_is_union_of_per_label_nms(impl):
    # ATSS post-processing size: 5000 boxes, 80 labels, threshold 0.6.
    n = 5000 if impl != "reference" else 1500
    boxes = random_boxes(n, 7, torch.float32, centres=50)
    g = torch.Generator().manual_seed(7)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(1, 81, (n,), generator=g)
    keep = run_ml_nms(impl, boxes, scores, labels, 0.6)
    per_label = [
        torch.nonzero(labels == c).view(-1)[run_nms(impl, boxes[labels == c], scores[labels == c], 0.6)]
        for c in labels.unique()
    ]
    assert torch.equal(keep, torch.sort(torch.cat(per_label)).values)


@needs_compiled
def test_compiled_and_reference_agree_float32():
    boxes = random_boxes(600, 11, torch.float32, centres=8)
    g = torch.Generator().manual_seed(11)
    scores = torch.randint(0, 20, (600,), generator=g).float() / 20
    labels = torch.randint(0, 3, (600,), generator=g)
    for thr in (0.2, 0.5, 0.8):
        assert torch.equal(_op_nms(boxes, scores, thr), nms_reference(boxes, scores, thr))
        assert torch.equal(_op_ml_nms(boxes, scores, labels, thr), ml_nms_reference(boxes, scores, labels, thr))


@needs_compiled
@pytest.mark.parametrize("name", ["nms", "ml_nms"])
def test_opcheck(name):
    boxes = random_boxes(40, 9, torch.float32)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(9))
    if name == "nms":
        args = (boxes, scores, 0.5, 1.0)
    else:
        args = (boxes, scores, torch.randint(1, 4, (40,), generator=torch.Generator().manual_seed(9)), 0.5, 1.0)
    torch.library.opcheck(getattr(torch.ops.atss_core, name).default, args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensor_in_cpu_only_build_raises_clearly():
    if not COMPILED or extension_info()["cuda"]:
        pytest.skip("needs a CPU-only build")
    with pytest.raises(NotImplementedError, match="CUDA"):
        _op_nms(t(BOXES4).cuda(), t(SCORES4).cuda(), 0.5)


def test_all_suppressed_but_the_best(impl):
    boxes = t([[10, 10, 40, 40]]).repeat(6, 1) + torch.arange(6.0)[:, None] * 0.1
    scores = t([0.2, 0.9, 0.4, 0.3, 0.5, 0.1])
    assert run_nms(impl, boxes, scores, 0.5).tolist() == [1]
    assert torchvision.ops.nms(boxes + t([0, 0, 1, 1]), scores, 0.5).tolist() == [1]
    labels = torch.tensor([1, 2, 1, 2, 1, 2])
    assert run_ml_nms(impl, boxes, scores, labels, 0.5).tolist() == [1, 4]


def skewed_labels(n, generator):
    """90% of the labels in 1..3, the rest in 1..80 (kernels.md §6)."""
    common = torch.randint(1, 4, (n,), generator=generator)
    rare = torch.randint(1, 81, (n,), generator=generator)
    return torch.where(torch.rand(n, generator=generator) < 0.9, common, rare)


def test_skewed_labels_match_torchvision_batched_nms(impl):
    # kernels.md §6: 90% of the boxes in 3 classes.
    n = 800
    boxes = random_boxes(n, 21, torch.float32, centres=15)
    g = torch.Generator().manual_seed(21)
    scores = torch.randperm(n, generator=g).float() / n
    labels = skewed_labels(n, g)
    thr = threshold_away_from(legacy_iou_matrix(boxes)[labels[:, None] == labels[None, :]])
    expected = torch.sort(torchvision.ops.batched_nms(boxes + t([0, 0, 1, 1]), scores, labels, thr)).values
    assert torch.equal(run_ml_nms(impl, boxes, scores, labels, thr), expected)


@needs_compiled
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_autocast_upcasts_half_boxes(low):
    boxes, scores = random_boxes(200, 13, torch.float32), torch.rand(200, generator=torch.Generator().manual_seed(13))
    b, s = boxes.to(low), scores.to(low)
    labels = torch.randint(1, 4, (200,), generator=torch.Generator().manual_seed(13))
    with torch.autocast("cpu", dtype=low):
        keep = _op_nms(b, s, 0.5)
        keep_ml = _op_ml_nms(b, s, labels, 0.5)
    assert torch.equal(keep, _op_nms(b.float(), s.float(), 0.5))
    assert torch.equal(keep_ml, _op_ml_nms(b.float(), s.float(), labels, 0.5))


def test_torch_compile_with_data_dependent_output():
    boxes, scores = t(BOXES4), t(SCORES4)
    labels = torch.tensor([1, 2, 1, 1])
    fn = torch.compile(lambda b, s, l: (nms(b, s, 0.5), ml_nms(b, s, l, 0.3)), backend="aot_eager", fullgraph=True)
    keep, keep_ml = fn(boxes, scores, labels)
    assert keep.tolist() == [0, 2, 3] and keep_ml.tolist() == [0, 1, 3]


# ---- CUDA kernels against the CPU kernels (kernels.md §7.3: identical results) ----
def tied_scores(n, seed, dtype):
    return (torch.randint(0, 16, (n,), generator=torch.Generator().manual_seed(seed)) / 16).to(dtype)


# Sizes around the 64-box tile edges, and the ATSS maximum.
CUDA_SIZES = [0, 1, 2, 63, 64, 65, 130, 1000, 5000]


@needs_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("box_offset", [0, 1])
def test_cuda_nms_matches_cpu(dtype, box_offset):
    for n in CUDA_SIZES:
        boxes, scores = random_boxes(n, n, dtype, centres=30), tied_scores(n, n, dtype)
        for thr in (0.3, 0.6):
            expected = _op_nms(boxes, scores, thr, box_offset)
            keep = _op_nms(boxes.cuda(), scores.cuda(), thr, box_offset)
            assert keep.device.type == "cuda" and keep.dtype == torch.int64
            assert torch.equal(keep.cpu(), expected), (n, thr)


@needs_cuda_kernel
@pytest.mark.parametrize("layout", ["uniform", "skewed", "one label", "float labels"])
@pytest.mark.parametrize("box_offset", [0, 1])
def test_cuda_ml_nms_matches_cpu(layout, box_offset):
    for n in CUDA_SIZES:
        g = torch.Generator().manual_seed(n)
        boxes, scores = random_boxes(n, n, torch.float32, centres=40), tied_scores(n, n, torch.float32)
        labels = {
            "uniform": torch.randint(1, 81, (n,), generator=g),
            "skewed": skewed_labels(n, g),
            "one label": torch.full((n,), 7, dtype=torch.int32),
            "float labels": torch.randint(1, 6, (n,), generator=g).float() / 2,
        }[layout]
        expected = _op_ml_nms(boxes, scores, labels, 0.6, box_offset)
        keep = _op_ml_nms(boxes.cuda(), scores.cuda(), labels.cuda(), 0.6, box_offset)
        assert keep.device.type == "cuda" and keep.dtype == torch.int64
        assert torch.equal(keep.cpu(), expected), n


@needs_cuda_kernel
def test_cuda_matches_torchvision_and_hand_checks():
    boxes, scores = t(BOXES4).cuda(), t(SCORES4).cuda()
    for thr, expected in ((0.3, [0, 3]), (0.5, [0, 2, 3]), (0.66, [0, 2, 3]), (0.7, [0, 1, 2, 3])):
        assert _op_nms(boxes, scores, thr).tolist() == expected
    assert _op_ml_nms(boxes, scores, torch.tensor([1, 2, 1, 1]).cuda(), 0.5).tolist() == [0, 1, 2, 3]
    n = 3000
    boxes = random_boxes(n, 17, torch.float32, centres=40)
    g = torch.Generator().manual_seed(17)
    scores = torch.randperm(n, generator=g).float() / n
    labels = torch.randint(1, 81, (n,), generator=g)
    thr = threshold_away_from(legacy_iou_matrix(boxes)[labels[:, None] == labels[None, :]])
    shifted = (boxes + t([0, 0, 1, 1])).cuda()
    expected = torch.sort(torchvision.ops.batched_nms(shifted, scores.cuda(), labels.cuda(), thr)).values
    assert torch.equal(_op_ml_nms(boxes.cuda(), scores.cuda(), labels.cuda(), thr), expected)


def test_python_greedy_reference_sanity():
    # The test's own reference reproduces the hand-computed §7.2 table.
    boxes, scores = t(BOXES4, torch.float64), t(SCORES4, torch.float64)
    assert py_greedy_nms(boxes, scores, 0.5) == [0, 2, 3]
    assert py_greedy_nms(boxes, scores, 0.66, box_offset=0) == [0, 1, 2, 3]
