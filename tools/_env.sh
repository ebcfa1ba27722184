# Sourced by quickstart.sh and run_tests.sh: install what is missing, then
# build atss_core with its csrc extension against the installed torch.
set -euo pipefail
PYTHON=${PYTHON:-python3}
# torch/torchvision are installed only when absent, never replaced: a user's
# CUDA build stays as it is. Override the versions with TORCH_SPEC.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    echo "[atss_core] torch/torchvision not found: installing $TORCH_SPEC"
    "$PYTHON" -m pip install $TORCH_SPEC
fi
if ! "$PYTHON" -c "import setuptools, ninja" 2>/dev/null; then
    "$PYTHON" -m pip install setuptools ninja
fi
echo "[atss_core] building atss_core and its csrc extension (pip install -e . --no-build-isolation)"
"$PYTHON" -m pip install --no-build-isolation -e . >/tmp/atss_core_build.log 2>&1 || {
    cat /tmp/atss_core_build.log
    echo "[atss_core] build failed; see the log above and INSTALL.md (Troubleshooting)" >&2
    exit 1
}
"$PYTHON" -c "from atss_core.layers._ops import extension_info; print('[atss_core] extension:', extension_info())"
