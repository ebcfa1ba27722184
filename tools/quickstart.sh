#!/usr/bin/env bash
# The whole loop on a fresh machine: install, build, make the toy dataset,
# train ATSS (CPU, or the GPU if present), evaluate with pycocotools, run the demo.
cd "$(dirname "$0")/.."
source tools/_env.sh
CONFIG=configs/quickstart/atss_toy.yaml
OUT=${OUT:-output/atss_toy}

echo "[atss_core] 1/4 toy dataset"
"$PYTHON" tools/make_toy_dataset.py

echo "[atss_core] 2/4 training ($CONFIG -> $OUT)"
"$PYTHON" tools/train_net.py --config-file "$CONFIG" --skip-test OUTPUT_DIR "$OUT"

echo "[atss_core] 3/4 evaluation on toy_shapes_val"
"$PYTHON" tools/test_net.py --config-file "$CONFIG" MODEL.WEIGHT "$OUT/model_final.pth" OUTPUT_DIR "$OUT"

echo "[atss_core] 4/4 demo on a few val images"
VAL_DIR=$("$PYTHON" -c "from atss_core.data.datasets.toy_shapes import ensure_toy_dataset; print(ensure_toy_dataset().val['root'])")
"$PYTHON" demo/atss_demo.py --config-file "$CONFIG" --weights "$OUT/model_final.pth" \
    --input "$VAL_DIR" --max-images 4 --output-dir "$OUT/demo" --confidence-threshold 0.4
