#!/usr/bin/env bash
# Everything that needs a GPU, in one run, under 8 minutes (the three timeouts add up to 480 s):
#   1. the 1.7B dry run on CUDA in bf16 (random weights, real sizes): per-phase CUDA peaks and the memory plan
#      with measured CUDA peaks at batch 1/2/4;
#   2. the GPU-marked tests (bf16 on CUDA: batched greedy = one-by-one, bundle audio = the trial's);
#   3. `bench train --shape 1.7b` in bf16: our training step vs the upstream double-shifted one; `ratio:` last.
# Run from anywhere on a GPU machine with the repository:  bash scripts/gpu_check.sh
# Output also goes to runs/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make install
PY=.venv/bin/python
mkdir -p runs
exec > >(tee runs/gpu_check.log) 2>&1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
t0=$SECONDS
echo "== 1/3 dry run, 1.7B, bf16 on cuda"
timeout 270 "$PY" -m qtts_sweep.cli dry-run model=qwen3_tts_1.7b_base model.device=cuda:0 model.dtype=bfloat16
echo "== 2/3 GPU tests"
timeout 120 "$PY" -m pytest -q -m gpu tests/test_gpu.py
echo "== 3/3 bench train, 1.7B shape, bf16 on cuda"
timeout 90 "$PY" -m qtts_sweep.cli bench train --shape 1.7b --device cuda --batch-sizes 1 2 4 --steps 20 \
  | tee runs/gpu_check.bench
echo "gpu_check: $((SECONDS - t0)) s in all"
tail -n 1 runs/gpu_check.bench  # `ratio: <x>` stays the last line
