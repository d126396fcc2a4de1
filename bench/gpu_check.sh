#!/usr/bin/env bash
# CUDA checks and GPU figures for issues 3 and 5, on a lent GPU, in under 6 minutes on an H100.
# Runs with the machine's own python3 (torch, timm, torchvision, pytest preinstalled); installs nothing
# and imports nothing that needs pycocotools. Usage, from anywhere: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, timm, torchvision; print('torch', torch.__version__, '| timm', timm.__version__, '| torchvision', torchvision.__version__)"

echo "== CUDA tests (AMP bf16/fp16, channels_last, torch.compile, branch == reference)"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_gpu_decode.py || status=1

echo "== ResNet-101 448x448 batch 32: plain, published and optimised recipes, eval (eager)"
timeout 150 "$PY" bench/gpu_bench.py --steps 10 --warmup 4 || status=1

echo "== optimised recipe + mixup under torch.compile (compile time not counted; cut off if slow)"
timeout 90 "$PY" bench/gpu_bench.py --only optimised --compile --steps 10 --warmup 3 || status=1

exit $status
