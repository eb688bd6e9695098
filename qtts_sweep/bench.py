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
