#!/usr/bin/env bash
# The GPU path in one command, on a machine with one NVIDIA GPU (about 5 minutes on an H200-class machine
# once installed): a CUDA build of torch if this venv has the CPU one, every `gpu`-marked test, then
# scripts/gpu_check.py (Redis, the API, a real GPU worker and a CPU worker, the every-stage-tiny job on
# the GPU worker, a benchmark on both devices, the showdown with its GPU columns, a summary).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
if ! .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if ! nvidia-smi -L; then
    echo "gpu_check: no NVIDIA GPU answers nvidia-smi; run this on a machine with one" >&2
    exit 2
  fi
  # PyPI's default Linux wheel of torch 2.13.0 is the CUDA build (the CPU one came from this project's disk).
  echo "gpu_check: this venv's torch is a CPU build; installing the CUDA build of torch 2.13.0"
  if ! .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "torch==2.13.0" \
        --index-url "${TORCH_INDEX_URL:-https://pypi.org/simple}"; then
    echo "gpu_check: could not install a CUDA torch wheel; set TORCH_INDEX_URL to an index that has one" >&2
    exit 2
  fi
fi
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
echo "== gpu-marked tests"
.venv/bin/python -m pytest -q -m gpu tests -p no:cacheprovider
echo "== the GPU worker end to end"
.venv/bin/python scripts/gpu_check.py
echo "gpu_check: done in $(( $(date +%s) - start )) s"
