"""`qtts-sweep bench search`: time to the winner, side by side. The SIMULATION (qtts_sweep.sweep.simulation: one
landscape, one cost model from the dry run's figures, Optuna's real samplers and pruners) compares (a) a grid on
every line, (b) retrain-per-trial TPE, (c) ours on every line, (d) ours with multi-fidelity over lines and a warm
start, over many seeds; `--real` adds (c) vs (d) for real on the tiny preset (lines synthesized, wall time).
Last line `ratio: <cost (d) / cost (a)>`.

Owns the printout and the real comparison. Does not own the simulation or sweeps.
"""

from __future__ import annotations

import statistics
import time

from qtts_sweep.sweep.simulation import (
    DIFFICULTY_SD,
    EPOCH_S,
    LINE_COST_S,
    LINE_S,
    LINE_SD,
    MIN_LINES,
    N_LINES,
    N_TRIALS,
    NOISE,
    P_THRESHOLD,
    STEP,
    STEPS_PER_EPOCH,
    STRATEGIES,
    SYNTH_S_PER_AUDIO_S,
    TRAIN_S_PER_STEP,
    WARM_K,
    simulate,
)


def bench_search(seeds: int = 20, real: bool = False, overrides: list[str] | None = None) -> float:
    """Print the simulation's side-by-side table (and with `real`, the tiny-preset run); last `ratio: d/a`."""
    t0 = time.perf_counter()
    res = simulate(seeds)
    print(f"SIMULATION (no model runs): {seeds} seeds, {N_TRIALS} trials for (b)-(d), {N_LINES} held-out lines")
    print(
        f"cost model (docs/real-size.md dry run, 1.7B on CPU): training {TRAIN_S_PER_STEP} s/step x "
        f"{STEPS_PER_EPOCH} steps = {EPOCH_S:.0f} s per epoch; synthesis {SYNTH_S_PER_AUDIO_S} s per second "
        f"of audio x {LINE_S} s = {LINE_COST_S:.0f} s per line"
    )
    print(
        f"landscape: best near lr 2e-6, epoch 10, scale 0.32; per-line noise sd {LINE_SD}, line difficulty sd "
        f"{DIFFICULTY_SD}; within noise = true score >= best - {NOISE:.3f}; (d): first {MIN_LINES} lines then "
        f"+{STEP}, WilcoxonPruner p < {P_THRESHOLD}, top {WARM_K} of a shifted voice's study enqueued"
    )
    means = {}
    for k, name in STRATEGIES.items():
        runs = res[k]
        cost = statistics.fmean(r.cost for r, _ in runs)
        synth = statistics.fmean(r.synth_s for r, _ in runs)
        lines = statistics.fmean(r.lines for r, _ in runs)
        hits = sum(r.promoted_q >= best - NOISE for r, best in runs)
        gap = statistics.fmean(best - r.promoted_q for r, best in runs)
        pruned = statistics.fmean(r.pruned for r, _ in runs)
        means[k] = (cost, synth)
        print(
            f"({k}) {name:36s}: cost {cost / 3600:8.1f} h (synthesis {synth / 3600:8.1f} h, {lines:6.0f} lines, "
            f"{pruned:4.1f} pruned); within noise of the best {hits}/{len(runs)} = {hits / len(runs):.0%}; "
            f"mean gap {gap:.4f}"
        )
    d_hits = sum(r.promoted_q >= best - NOISE for r, best in res["d"]) / len(res["d"])
    print(f"(d)/(c) synthesis cost: {means['d'][1] / means['c'][1]:.3f} (target <= 0.5)")
    print(f"(d) within noise: {d_hits:.0%} of seeds (target >= 90%)")
    print(f"simulation wall time: {time.perf_counter() - t0:.1f} s")
    if real:
        real_comparison(overrides or [])
    ratio = means["d"][0] / means["a"][0]
    print("target: ratio <= 0.3")
    print(f"ratio: {ratio:.3f}")
    return ratio


REAL_LABELS = {"c": "ours, every line", "d": "ours, multi-fidelity (no warm start)"}
REAL_OVERRIDES = [
    "train.max_steps_per_epoch=2",
    "eval.max_lines=12",
    "eval.batch_size=2",
    "eval.decoding.frames_per_char=0.3",
    "eval.decoding.min_frames=6",
    "eval.metrics.mos=none",
    "data.split.min_val=12",
    "tracking=none",
]


def real_comparison(overrides: list[str], n_trials: int = 8, min_lines: int = 4, step: int = 4) -> dict:
    """(c) vs (d) for real on the tiny preset: the same TPE sweep with full lines, then with Wilcoxon-pruned
    chunks of lines; lines synthesized (rows written to the per-line cache, the base model's included) and wall."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.model.tiny import build_tiny_model
    from qtts_sweep.sweep.driver import SweepDriver
    from qtts_sweep.sweep.fidelity import Fidelity
    from qtts_sweep.sweep.spec import load_spec

    spec = load_spec("tiny")
    space = {**spec.space, "eval.lora_scale": dataclasses.replace(spec.space["eval.lora_scale"], step=None)}
    full = dataclasses.replace(spec, n_trials=n_trials, pruner="none", pruner_kwargs={}, space=space)
    variants = {"c": full, "d": dataclasses.replace(full, pruner="wilcoxon", fidelity=Fidelity(min_lines, step))}
    out = {}
    with tempfile.TemporaryDirectory(prefix="qtts-bench-search-") as tmp:
        models = Path(tmp) / "models"
        build_tiny_model(models / "tiny-seed0", seed=0)
        for k, sp in variants.items():
            runs = Path(tmp) / k
            base = [*REAL_OVERRIDES, *overrides, f"paths.models_dir={models}", f"paths.runs_dir={runs}"]
            driver = SweepDriver(sp, lambda ov: load_config(ov), base, log=lambda m: None)
            t0 = time.perf_counter()
            outcome = driver.run()
            wall = time.perf_counter() - t0
            lines = _lines_synthesized(runs)
            out[k] = (lines, wall, outcome)
            best = outcome.best or {}
            print(
                f"real tiny preset ({k}) {REAL_LABELS[k]}: {outcome.completed} complete, {outcome.pruned} pruned, "
                f"{lines} lines synthesized, wall {wall:.1f} s, promoted trial {best.get('number')}"
            )
    (lc, wc, _), (ld, wd, _) = out["c"], out["d"]
    print(f"real tiny preset (d)/(c): lines {ld / max(lc, 1):.3f}, wall {wd / wc:.3f}")
    return out


def _lines_synthesized(runs_dir) -> int:
    """Rows in every per-line cache entry: each was written once, when its lines were synthesized."""
    import json

    return sum(len(json.loads(p.read_text())) for p in runs_dir.glob("evals/lines-*/*/rows.json"))
