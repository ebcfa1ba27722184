#!/usr/bin/env bash
# Install what is missing, build, and run the test suite (CPU; CUDA tests skip without a GPU).
cd "$(dirname "$0")/.."
source tools/_env.sh
"$PYTHON" -c "import pytest" 2>/dev/null || "$PYTHON" -m pip install pytest
exec "$PYTHON" -m pytest tests "$@"
