#!/usr/bin/env bash
# Training-step throughput of a randomly initialised, full-size 1.7B-Base-shaped model on a GPU:
# our loss vs the upstream double-shifted loss, bf16 + SDPA, LoRA r16 on every projection, batch 1, 2 and 4.
# Prints median step time, tokens/s (talker positions/s) and peak CUDA memory per variant; last line `ratio:`.
# Run from the repo root on a GPU box after `make install`:  bash scripts/gpu_bench_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
exec "$PY" -m qtts_sweep.cli bench train --shape 1.7b --device cuda --batch-sizes 1 2 4 --steps 30 "$@"
