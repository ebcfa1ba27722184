#!/usr/bin/env python
"""Convert a released mmdetection 2.x checkpoint (DSLA; DW and O2F once their converters
exist) into an atss_core checkpoint (checkpoints.md §2).

    python tools/convert_checkpoint.py dsla_r50.pth dsla_r50_atss.pth
    python tools/test_net.py --config-file configs/dsla/dsla_R_50_FPN_1x.yaml \\
        MODEL.WEIGHT dsla_r50_atss.pth [the printed overrides]

The output holds {"model": state dict, "meta": {"source", "head",
"cfg_overrides", "CLASSES"}} and is written atomically. The config values the
weights need (depth, style, DCN, head options, input normalisation) are
printed as ``KEY VALUE`` options; any key that cannot be mapped is an error.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atss_core.utils.checkpoint import _atomic_write  # noqa: E402
from atss_core.utils.mmdet_convert import ConversionError, as_opts, convert  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="mmdetection checkpoint (.pth with 'state_dict' and 'meta')")
    parser.add_argument("output", help="where to write the converted checkpoint")
    parser.add_argument(
        "--style", choices=("caffe", "pytorch"), default=None,
        help="ResNet style; required if the checkpoint has no meta['config'] (caffe: stride in the 1x1 conv)",
    )
    parser.add_argument(
        "--bn-eps", type=float, default=0.0,
        help="MODEL.RESNETS.BN_EPS of the model that will load the result (default 0: frozen BN)",
    )
    parser.add_argument(
        "--trust", action="store_true",
        help="load with torch.load(weights_only=False); only for files from a trusted source whose meta "
        "holds objects that weights_only refuses",
    )
    return parser.parse_args(argv)


def load(path, trust):
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:
        hint = "" if trust else " (if the file is from a trusted source, --trust loads it with weights_only=False)"
        raise SystemExit(f"error: could not read {path}: {e}{hint}") from e
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} holds a {type(data).__name__}, not a checkpoint dict")
    if isinstance(data.get("state_dict"), dict):
        return data["state_dict"], data.get("meta") or {}
    return data, {}


def main(argv=None):
    args = parse_args(argv)
    print(f"reading {args.input}", flush=True)
    state_dict, meta = load(args.input, args.trust)
    try:
        sd, overrides, report = convert(state_dict, meta, style=args.style, bn_eps=args.bn_eps)
    except ConversionError as e:
        raise SystemExit(f"error: {args.input}: {e}") from e
    counters = sum(k.endswith("num_batches_tracked") for k in report.dropped)
    others = sorted({k.rsplit(".", 1)[0] for k in report.dropped if not k.endswith("num_batches_tracked")})
    what = f"{counters} BN counters" + "".join(f", {m}.*" for m in others)
    print(f"{report.head} detector: {report.num_source_keys} keys -> {report.num_converted_keys} "
          f"({len(report.dropped)} dropped: {what})", flush=True)
    for note in report.notes:
        print(f"note: {note}")
    out_meta = {"source": "mmdet", "head": report.head, "cfg_overrides": overrides}
    if meta.get("CLASSES") is not None:
        out_meta["CLASSES"] = list(meta["CLASSES"])
    _atomic_write(args.output, lambda f: torch.save({"model": sd, "meta": out_meta}, f))
    print(f"wrote {args.output}")
    print("config overrides (append to the tools' command line):")
    print("  " + " ".join(f"{k} {v!r}" if " " in v else f"{k} {v}" for k, v in zip(*[iter(as_opts(overrides))] * 2)))


if __name__ == "__main__":
    main()
