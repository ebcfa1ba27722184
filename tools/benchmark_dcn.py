"""Times atss_core's deformable convolution against torchvision.ops.deform_conv2d
at the sizes of kernels.md §6 (scaled down on CPU), forward and forward+backward.

    python tools/benchmark_dcn.py                       # CPU, and CUDA when present
    python tools/benchmark_dcn.py --device cpu --warmup 1 --repeat 5

`dcn_cases` follows tools/benchmark_ops.py's case protocol (it yields
(columns, ours, torchvision) triples on identical inputs), so that script can
list it beside its other ops; timing and the table come from there too.
"""
import argparse
import sys
from pathlib import Path

import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atss_core.layers import deform_conv, modulated_deform_conv  # noqa: E402

# (name, [B, C, H, W], Cout, kernel, groups, deformable groups, modulated, bias)
HEAD = ("head v2", 256, 256, 3, 1, 1, True, True)
CUDA_SIZES = [
    (HEAD, (2, 256, 100, 152)),
    (("R-50 c3 v2", 128, 128, 3, 1, 1, True, False), (2, 128, 100, 168)),
    (("R-50 c4 v2", 256, 256, 3, 1, 1, True, False), (2, 256, 50, 84)),
    (("R-50 c5 v2", 512, 512, 3, 1, 1, True, False), (2, 512, 25, 42)),
    (("X-101 c4 v2 g32", 1024, 1024, 3, 32, 1, True, False), (2, 1024, 50, 84)),
    (("DW sampling v1", 4, 4, 1, 4, 4, False, False), (2, 4, 100, 152)),
]
CPU_SIZES = [
    (HEAD, (2, 256, 50, 84)),
    (("R-50 c5 v2", 512, 512, 3, 1, 1, True, False), (2, 512, 25, 42)),
    (("DW sampling v1", 4, 4, 1, 4, 4, False, False), (2, 4, 100, 152)),
]


def dcn_inputs(shape, out_channels, kernel, groups, deformable_groups, modulated, bias, device, generator):
    """Inputs of a stride-1 'same' DCN: offsets of a few pixels, sigmoid masks."""
    batch, channels, height, width = shape
    taps = kernel * kernel

    def randn(*size):
        return torch.randn(*size, generator=generator).to(device)

    x = randn(batch, channels, height, width)
    offset = 2 * randn(batch, 2 * deformable_groups * taps, height, width)
    mask = torch.sigmoid(randn(batch, deformable_groups * taps, height, width)) if modulated else None
    weight = randn(out_channels, channels // groups, kernel, kernel) / (channels * taps) ** 0.5
    return x, offset, mask, weight, randn(out_channels) if bias else None


def dcn_cases(device, generator):
    sizes = CUDA_SIZES if device.type == "cuda" else CPU_SIZES
    for (name, _, out_channels, kernel, groups, dg, modulated, bias), shape in sizes:
        tensors = dcn_inputs(shape, out_channels, kernel, groups, dg, modulated, bias, device, generator)
        padding = kernel // 2
        params = dict(stride=1, padding=padding, dilation=1, groups=groups, deformable_groups=dg)

        def ours(x, offset, mask, weight, bias, params=params):
            if mask is None:  # the v1 cases have no bias
                return deform_conv(x, offset, weight, **params)
            return modulated_deform_conv(x, offset, mask, weight, bias, **params)

        def theirs(x, offset, mask, weight, bias, padding=padding):
            return deform_conv2d(x, offset, weight, bias, padding=(padding, padding), mask=mask)

        for backward in (False, True):
            leaves = [t.detach().requires_grad_(backward) if t is not None else None for t in tensors]

            def run(fn, leaves=leaves, backward=backward):
                for t in leaves:
                    if t is not None:
                        t.grad = None
                out = fn(*leaves)
                if backward:
                    out.sum().backward()

            yield (
                ("dcn", f"{name} {list(shape)}", "fwd+bwd" if backward else "fwd", "float32"),
                lambda run=run: run(ours),
                lambda run=run: run(theirs),
            )


def bench_dcn(devices, warmup, repeat):
    """Prints one markdown row per (device, case), as tools/benchmark_ops.py does."""
    # Imported here: benchmark_ops imports this module.
    from benchmark_ops import measure

    print("device | op | size | mode | dtype | ours ms | tv ms | speedup")
    print(" | ".join("---" for _ in range(8)))
    for name in devices:
        device = torch.device(name)
        generator = torch.Generator().manual_seed(0)
        for columns, ours, theirs in dcn_cases(device, generator):
            our_ms, _ = measure(ours, device, warmup, repeat)
            tv_ms, _ = measure(theirs, device, warmup, repeat)
            print(f"{name} | {' | '.join(columns)} | {our_ms:.1f} | {tv_ms:.1f} | {tv_ms / our_ms:.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from benchmark_ops import devices_for  # imported here, as in bench_dcn

    devices = devices_for(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; speedup = torchvision / ours")
    bench_dcn(devices, args.warmup, args.repeat)


if __name__ == "__main__":
    main()
