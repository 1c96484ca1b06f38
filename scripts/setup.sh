#!/usr/bin/env bash
# Create .venv in the checkout and install vaebias into it.
# Installs the pinned CPU build of torch first when no torch is present, so that the
# open range in pyproject.toml does not pull a multi-GB CUDA build (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install --quiet "torch==${VAEBIAS_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install --quiet -e ".[test,dev]"
