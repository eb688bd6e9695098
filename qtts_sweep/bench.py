"""`qtts-sweep bench <what>`: benchmarks that measure side by side in one run and print `ratio: <x>` last.

Not tests: they report numbers for people to read; targets are stated beside the ratio.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def bench_prep(overrides: list[str], repeats: int = 3) -> float:
    """Whole `qtts-sweep prepare` processes on the demo data: a cold first run vs cached re-runs.

    The tiny model folder is built before timing (model creation is not data preparation); each cold run gets
    an empty runs/ of its own.
    """
    from qtts_sweep.tiny import build_tiny_model

    exe = [sys.executable, "-m", "qtts_sweep.cli", "prepare", "model=tiny", *overrides]
    first, cached = [], []
    with tempfile.TemporaryDirectory(prefix="qtts-bench-prep-") as tmp:
        models = Path(tmp) / "models"
        build_tiny_model(models / "tiny-seed0", seed=0)
        for i in range(repeats):
            env = {**os.environ, "QTTS_RUNS_DIR": str(Path(tmp) / f"runs{i}")}
            cmd = [*exe, f"paths.models_dir={models}"]
            first.append(_timed(cmd, env))
            cached.append(_timed(cmd, env))
            print(f"run {i + 1}/{repeats}: first {first[-1]:.2f} s, cached {cached[-1]:.2f} s", flush=True)
    f, c = statistics.median(first), statistics.median(cached)
    print(f"median first (validate + resample + encode): {f:.2f} s")
    print(f"median cached (hash + validate from cache):  {c:.2f} s")
    print("target: ratio <= 0.25")
    ratio = c / f
    print(f"ratio: {ratio:.3f}")
    return ratio


def _random_batch(model, batch_size: int, frames: int, text_len: int, generator):
    import torch

    from qtts_sweep.loss import Example

    tcfg = model.config.talker_config
    spk = torch.randn(tcfg.hidden_size, generator=generator).to(model.device, model.dtype)
    text_vocab = min(tcfg.text_vocab_size, 256)
    out = []
    for _ in range(batch_size):
        out.append(
            Example(
                role_ids=torch.randint(0, text_vocab, (3,), generator=generator),
                text_ids=torch.randint(0, text_vocab, (text_len,), generator=generator),
                codes=torch.randint(
                    0, tcfg.code_predictor_config.vocab_size, (frames, tcfg.num_code_groups), generator=generator
                ),
                spk_embedding=spk,
            )
        )
    return out


def bench_train(
    shape: str = "mid",
    device: str = "cpu",
    batch_sizes: tuple[int, ...] = (2,),
    steps: int = 30,
    frames: int = 60,
    text_len: int = 40,
) -> float:
    """Our training step vs the same step with the upstream double-shifted loss, interleaved, same model/batch.

    One step = forward + backward + AdamW update of the LoRA parameters (r16 on every projection). Prints the
    median step time of each, tokens/s (talker positions per second) and peak memory (CUDA: per variant;
    CPU: the process's peak RSS, shared by both).
    """
    import resource

    import torch
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    from qtts_sweep.lora import apply_lora
    from qtts_sweep.loss import CORRECT, LossVariant, compute_loss
    from qtts_sweep.schema import LoraConfig
    from qtts_sweep.tiny import shaped_model_config

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = Qwen3TTSConfig(**shaped_model_config(shape))
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3TTSForConditionalGeneration(config).to(dtype)
    apply_lora(model, LoraConfig(), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    variants = {"ours": CORRECT, "upstream": LossVariant(double_shift=True)}
    cuda = device.startswith("cuda")
    ratio = float("nan")
    for bs in batch_sizes:
        batch = _random_batch(model, bs, frames, text_len, torch.Generator().manual_seed(bs))
        positions = bs * (frames + text_len + 10)
        times: dict[str, list[float]] = {k: [] for k in variants}
        peak: dict[str, int] = dict.fromkeys(variants, 0)
        for i in range(steps + 3):  # 3 warm-up rounds
            for name, variant in variants.items() if i % 2 == 0 else reversed(variants.items()):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                out = compute_loss(model, batch, 0.3, variant)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                if cuda:
                    torch.cuda.synchronize()
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        for name in variants:
            mem = f"{peak[name] / 2**30:.2f} GiB peak" if cuda else ""
            print(
                f"shape {shape} batch {bs} {name:>8}: median step {med[name] * 1000:8.1f} ms, "
                f"{positions / med[name]:9.0f} tokens/s {mem}",
                flush=True,
            )
        ratio = med["ours"] / med["upstream"]
    if not cuda:
        print(f"process peak RSS (both variants): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print("target: ratio <= 1.05")
    print(f"ratio: {ratio:.3f}")
    return ratio
