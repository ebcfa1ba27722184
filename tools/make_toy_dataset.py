"""Generate the toy-shapes detection dataset (PNG images + COCO json).

    python tools/make_toy_dataset.py [--out DIR] [--num-train 800] [--num-val 150] [--seed 0] [--size 128]

Same arguments -> byte-identical files. Without ``--out`` the default dataset
goes to the cache directory that the built-in ``toy_shapes_train`` /
``toy_shapes_val`` catalog names read (and would generate on first use):
``$ATSS_CORE_DATA/toy_shapes``, else ``~/.cache/atss_core/toy_shapes``. For
another ``--out``, point a catalog entry at OUT/{train,val} and
OUT/annotations/toy_shapes_{train,val}.json.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atss_core.config.paths_catalog import toy_shapes_root  # noqa: E402
from atss_core.data.datasets.toy_shapes import DEFAULTS, ensure_toy_dataset  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="output directory (must not exist, or be empty); default: the catalog cache")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-val", type=int, default=DEFAULTS["num_val"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--size", type=int, default=DEFAULTS["size"], help="nominal image side (images vary 0.875x-1.25x)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else toy_shapes_root()
    train, val = ensure_toy_dataset(out, args.num_train, args.num_val, args.seed, args.size)
    for split, paths in (("train", train), ("val", val)):
        print(f"{split}: images {paths['root']}  annotations {paths['ann_file']}")


if __name__ == "__main__":
    main()
