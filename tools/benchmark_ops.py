"""Times atss_core's compiled ops against their torchvision.ops equivalents
at the sizes of kernels.md §6, on CPU and on CUDA when present.

    python tools/benchmark_ops.py                                  # protocol: 10 warm-up, 50 timed
    python tools/benchmark_ops.py --device cpu --warmup 2 --repeat 7

Each case runs `--warmup` untimed calls, then `--repeat` timed calls
(synchronised: CUDA events on GPU, perf_counter on CPU) and reports the median.
"speedup" is torchvision's median over ours (> 1: ours is faster). On CUDA,
"peak MB" is torch.cuda.max_memory_allocated during the timed calls minus
what was allocated before them (the inputs). On CPU no peak is reported:
torch's CPU allocator is invisible to tracemalloc, and the process RSS
high-water mark cannot be attributed to one case.

Pairs compared on identical inputs (kernels.md §6 protocol):
- focal: SigmoidFocalLoss(2, 0.25)(logits, labels) vs
  torchvision sigmoid_focal_loss(logits, one_hot, 0.25, 2, "sum"), the
  one-hot built outside the timing; forward, and forward+backward.
- nms / ml_nms: ours vs torchvision nms / batched_nms on the boxes shifted by
  [0, 0, 1, 1] (the +1 pixel convention), shifted outside the timing.
- dcn: deform_conv / modulated_deform_conv vs deform_conv2d, with the same
  offsets and masks (cases in tools/benchmark_dcn.py).
"""
import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atss_core.layers import SigmoidFocalLoss, ml_nms, nms  # noqa: E402
from atss_core.layers._ops import extension_info  # noqa: E402
from benchmark_dcn import dcn_cases  # noqa: E402  (tools/ is on sys.path when run as a script)

FOCAL_SIZES = [44_800, 100_000, 180_000]  # anchors x 80 classes; 44.8k = ATSS batch of 2
NMS_SIZES = [1000, 5000]
ML_NMS_SIZES = [1000, 2000, 5000]
NUM_CLASSES = 80
NMS_THRESHOLD = 0.6


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--ops", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50)
    return parser.parse_args()


def devices_for(choice):
    """The devices a --device choice runs on ("all": CPU, and CUDA when present)."""
    devices = ["cpu", "cuda"] if choice == "all" else [choice]
    if "cuda" in devices and not torch.cuda.is_available():
        if choice == "cuda":
            raise SystemExit("--device cuda: no CUDA device is available")
        devices.remove("cuda")
    return devices


def measure(fn, device, warmup, repeat):
    """(median milliseconds, peak bytes beyond the inputs or None on CPU)."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), None
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated(device) - baseline


# ---- inputs ----
def clustered_boxes(n, generator, centres=50):
    """xyxy boxes around `centres` points of an 800 x 1333 image, sides 16-512 px."""
    centre = torch.rand(centres, 2, generator=generator) * torch.tensor([1333.0, 800.0])
    xy = centre[torch.randint(0, centres, (n,), generator=generator)] + torch.randn(n, 2, generator=generator) * 8
    size = 16 * 32 ** torch.rand(n, 2, generator=generator)  # log-uniform in [16, 512]
    return torch.cat([xy - size / 2, xy + size / 2], dim=1)


def nms_labels(n, layout, generator):
    if layout == "uniform":
        return torch.randint(1, NUM_CLASSES + 1, (n,), generator=generator)
    # 90% of the boxes in 3 classes, the rest spread over all 80.
    common = torch.randint(1, 4, (n,), generator=generator)
    rare = torch.randint(1, NUM_CLASSES + 1, (n,), generator=generator)
    return torch.where(torch.rand(n, generator=generator) < 0.9, common, rare)


def focal_inputs(rows, generator):
    # Logits near the -log(99) prior; ~1% positives, the rest background.
    logits = torch.randn(rows, NUM_CLASSES, generator=generator) * 2 - 4.6
    labels = torch.randint(1, NUM_CLASSES + 1, (rows,), generator=generator)
    labels = torch.where(torch.rand(rows, generator=generator) < 0.01, labels, torch.zeros_like(labels))
    one_hot = (labels[:, None] == torch.arange(1, NUM_CLASSES + 1)).float()
    return logits, labels, one_hot


# ---- cases: each yields (label columns, our fn, torchvision fn) ----
def focal_cases(device, generator):
    ours = SigmoidFocalLoss(2.0, 0.25)
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    for rows in FOCAL_SIZES:
        logits, labels, one_hot = (t.to(device) for t in focal_inputs(rows, generator))
        for dtype in dtypes:
            amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
            for backward in (False, True):
                # Low precision: logits as an autocast conv would hand them over.
                x = logits.to(dtype, copy=True).requires_grad_(backward)

                def run(loss_fn, x=x, amp=amp, backward=backward):
                    x.grad = None
                    with amp:
                        loss = loss_fn(x)
                    if backward:
                        loss.backward()

                def our_loss(x, labels=labels):
                    return ours(x, labels)

                def tv_loss(x, one_hot=one_hot):
                    return torchvision.ops.sigmoid_focal_loss(x, one_hot, 0.25, 2.0, "sum")

                mode = "fwd+bwd" if backward else "fwd"
                yield (
                    ("focal", f"[{rows / 1000:g}k, {NUM_CLASSES}]", mode, str(dtype).replace("torch.", "")),
                    lambda run=run, f=our_loss: run(f),
                    lambda run=run, f=tv_loss: run(f),
                )


def nms_cases(device, generator):
    for n in NMS_SIZES:
        boxes = clustered_boxes(n, generator).to(device)
        scores = torch.rand(n, generator=generator).to(device)
        shifted = boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
        yield (
            ("nms", f"N={n}", f"thr {NMS_THRESHOLD}", "float32"),
            lambda b=boxes, s=scores: nms(b, s, NMS_THRESHOLD),
            lambda b=shifted, s=scores: torchvision.ops.nms(b, s, NMS_THRESHOLD),
        )


def ml_nms_cases(device, generator):
    for n in ML_NMS_SIZES:
        for layout in ("uniform", "skewed"):
            boxes = clustered_boxes(n, generator).to(device)
            scores = torch.rand(n, generator=generator).to(device)
            labels = nms_labels(n, layout, generator).to(device)
            shifted = boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
            yield (
                ("ml_nms", f"N={n}", f"80 cls {layout}", "float32"),
                lambda b=boxes, s=scores, l=labels: ml_nms(b, s, l, NMS_THRESHOLD),
                lambda b=shifted, s=scores, l=labels: torchvision.ops.batched_nms(b, s, l, NMS_THRESHOLD),
            )


CASES = {"focal": focal_cases, "nms": nms_cases, "ml_nms": ml_nms_cases, "dcn": dcn_cases}


def megabytes(n_bytes):
    return "-" if n_bytes is None else f"{n_bytes / 2**20:.1f}"


def main():
    args = parse_args()
    ops = args.ops.split(",")
    unknown = sorted(set(ops) - set(CASES))
    if unknown:
        raise SystemExit(f"--ops: unknown {unknown}; choose from {sorted(CASES)}")
    devices = devices_for(args.device)
    info = extension_info()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    print(f"atss_core._C: {info}")
    if not info["available"]:
        print("WARNING: atss_core._C is not built; 'ours' times the pure-PyTorch fallbacks")
    print(f"warm-up {args.warmup}, timed {args.repeat}, median; speedup = torchvision / ours\n")
    header = ("device", "op", "size", "mode", "dtype", "ours ms", "tv ms", "speedup", "ours peak MB", "tv peak MB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name in devices:
        device = torch.device(name)
        if name == "cuda":
            print(f"<!-- {torch.cuda.get_device_name(device)} -->")
        generator = torch.Generator().manual_seed(0)
        for op in ops:
            for columns, ours, theirs in CASES[op](device, generator):
                our_ms, our_peak = measure(ours, device, args.warmup, args.repeat)
                tv_ms, tv_peak = measure(theirs, device, args.warmup, args.repeat)
                row = (name, *columns, f"{our_ms:.3f}", f"{tv_ms:.3f}", f"{tv_ms / our_ms:.2f}x")
                print(" | ".join(row + (megabytes(our_peak), megabytes(tv_peak))), flush=True)


if __name__ == "__main__":
    main()
