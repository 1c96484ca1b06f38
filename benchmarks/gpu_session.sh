#!/usr/bin/env bash
# The prepared GPU check of issue 6 (scale), for a session that is lent a GPU: one command
# through the device tool, from the repository root:
#     bash benchmarks/gpu_session.sh            (timeout_s about 480; it needs about 5 min)
# The device machine has no package index: vaebias runs from src/ with the machine's own
# torch (CUDA build) and packages. Everything is written under $OUT (the device tool brings
# it back); each section has its own time limit, so one that hangs does not lose the rest.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
T0=$(date +%s)
section() { echo; echo "=== $1 ($(( $(date +%s) - T0 )) s)"; }

section "device"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, vaebias, h5py, sklearn, scipy, yaml, tqdm, matplotlib, markdown; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); \
print(torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported(), \
'TF32 conv', torch.backends.cudnn.allow_tf32, 'TF32 matmul', torch.backends.cuda.matmul.allow_tf32)"
} 2>&1 | tee "$OUT/device.txt"

section "CUDA tests: renderers on the device, ensemble members vs solo runs"
timeout 180 $PY -m pytest -q -s -p no:cacheprovider tests/test_dsprites.py tests/test_shapes3d.py \
    tests/test_ensemble.py -k cuda 2>&1 | tee "$OUT/cuda_tests.txt" | grep -v "^$" | tail -12

section "training throughput: plain fp32 loop vs the fast step; bf16 vs fp32 loss curve on the GPU"
timeout 150 $PY benchmarks/train_throughput.py --skip-cpu --steps 200 --curve-steps 1500 --curve-device cuda \
    2>&1 | tee "$OUT/train_throughput.txt"

section "ensembles"
timeout 300 $PY benchmarks/ensemble.py --skip-cpu --fast --members 8 --steps 20 --warmup 3 \
    --gpu-sizes 8 64 256 1024 --big-batch 2>&1 | tee "$OUT/ensemble.txt"
section "done"
