#!/usr/bin/env bash
# The prepared GPU check of issue 6 (scale), for a session that is lent a GPU: one command
# through the device tool, from the repository root, e.g.
#     bash benchmarks/gpu_session.sh            (timeout_s 540)
# It writes its outputs under $OUT (the device tool brings them back). NOT YET RUN: the
# first session with a GPU should expect to fix small things here.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# vaebias itself, using the machine's torch (CUDA build) and whatever packages it has
$PY -m pip install -q --no-deps -e . > "$OUT/pip.txt" 2>&1
$PY -m pip install -q "markdown>=3.4" h5py scikit-learn pyyaml tqdm matplotlib >> "$OUT/pip.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(), torch.cuda.is_bf16_supported())" \
    | tee -a "$OUT/device.txt"
# the CUDA tests (renderers on the device, ...), then the two benchmarks' GPU sections
timeout 120 $PY -m pytest -q -m "not slow" -k "cuda or gpu" tests/ 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
timeout 150 $PY benchmarks/train_throughput.py --skip-cpu --steps 200 2>&1 | tee "$OUT/train_throughput.txt"
timeout 240 $PY benchmarks/ensemble.py --skip-cpu --fast --members 8 --steps 30 --gpu-sizes 8 32 128 512 2>&1 \
    | tee "$OUT/ensemble.txt"
