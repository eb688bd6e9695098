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
from typing import Any

from qtts_sweep.sweep.phases import PhaseClock, breakdown, mean_phases, read
from qtts_sweep.sweep.result import StoredTrial


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
    from qtts_sweep.model.tiny import build_tiny_model

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

    from qtts_sweep.model.loss import Example

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

    Both variants are our own code (`qtts_sweep.model.loss` with `double_shift=True` reproduces upstream's
    alignment), so the ratio is near 1 by construction: it shows the correct loss costs nothing extra, not that
    we are faster than upstream. No pass/fail target; one ratio per batch size, the last one printed last.

    One step = forward + backward + AdamW update of the LoRA parameters (r16 on every projection). Prints the
    median step time of each, tokens/s (talker positions per second) and peak memory (CUDA: per variant;
    CPU: the process's peak RSS, shared by both).
    """
    import resource

    import torch

    from qtts_sweep.config.schema import LoraConfig
    from qtts_sweep.model.lora import apply_lora
    from qtts_sweep.model.loss import CORRECT, LossVariant, compute_loss
    from qtts_sweep.model.tiny import new_model, shaped_model_config

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = new_model(shaped_model_config(shape), attn_implementation="sdpa").to(dtype)
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
        print(f"batch {bs}: ours / double-shift = {ratio:.3f}", flush=True)
    if not cuda:
        print(f"process peak RSS (both variants): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"ratio: {ratio:.3f}")
    return ratio


BENCH_SWEEP_OVERRIDES = [
    "experiment=tiny_demo",
    "eval.max_lines=2",
    "eval.batch_size=2",
    "eval.metrics.mos=none",
    "eval.decoding.frames_per_char=0.5",
    "eval.decoding.min_frames=10",
]


def bench_sweep(n_trials: int = 24, overrides: list[str] | None = None) -> float:
    """Checkpoint reuse, measured apart from process reuse: three ways to run the same trials, side by side.

    (a) the real driver (worker process, Optuna SQLite, MLflow off) over lr x epoch x scale on the tiny preset,
        random sampler, no pruning: one warm worker, checkpoints and evaluations reused;
    (c) (a)'s trial parameters in order, in one process that keeps one model loaded (a warm worker) but trains
        every trial from scratch in a store of its own and scores without the cache: process reuse only;
    (b) the same, but every trial also loads the model again and re-analyses the references, the way a plain
        Hydra + Optuna setup runs trials: neither kind of reuse.
    Prints epochs trained by each, the lower bound (distinct training keys x highest epoch asked of each), (a)'s
    orchestration overhead, where each one's wall time goes (phases.py; in (b) the training column includes its
    model load for training), the ratio with warm worker and reuse a/b, and last `ratio: <a/c>` (reuse alone).
    """
    import dataclasses

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.driver import SweepDriver
    from qtts_sweep.sweep.spec import load_spec
    from qtts_sweep.sweep.storage import load_existing_study

    base = [*BENCH_SWEEP_OVERRIDES, "tracking=none", *(overrides or [])]
    spec = dataclasses.replace(
        load_spec("tiny"), study_name="bench", n_trials=n_trials, sampler="random", pruner="none", enqueue=[]
    )
    with tempfile.TemporaryDirectory(prefix="qtts-bench-sweep-") as tmp:
        from qtts_sweep.model.tiny import build_tiny_model

        models = Path(tmp) / "models"
        build_tiny_model(models / "tiny-seed0", seed=0)
        common = [*base, f"paths.models_dir={models}"]
        driver = SweepDriver(
            spec, lambda ov: load_config(ov), [*common, f"paths.runs_dir={Path(tmp) / 'a'}"],
            log=lambda m: print(m, flush=True) if "objective" in m else None,
        )  # fmt: skip
        t0 = time.perf_counter()
        outcome = driver.run()
        wall_a = time.perf_counter() - t0
        trials = [
            t for t in load_existing_study("bench", driver.storage_url).get_trials() if t.state.name == "COMPLETE"
        ]
        params = [t.params for t in trials]
        clock_c, clock_b = PhaseClock(), PhaseClock()
        t0 = time.perf_counter()
        epochs_c = _replay_without_reuse(params, [*common, f"paths.runs_dir={Path(tmp) / 'c'}"], True, clock_c)
        wall_c = time.perf_counter() - t0
        t0 = time.perf_counter()
        epochs_b = _replay_without_reuse(params, [*common, f"paths.runs_dir={Path(tmp) / 'b'}"], False, clock_b)
        wall_b = time.perf_counter() - t0
    _print_sweep_bench(trials, outcome, driver, wall_a, (epochs_b, wall_b), (epochs_c, wall_c))
    columns = {"(a) reuse": (wall_a, outcome.phases), "(c) warm, no reuse": (wall_c, clock_c.as_dict())}
    columns["(b) cold, no reuse"] = (wall_b, clock_b.as_dict())
    print("\n".join(breakdown(columns)))
    ratio = wall_a / wall_c
    print("target: ratio <= 0.5")
    print(f"ratio: {ratio:.3f}")
    return ratio


def _print_sweep_bench(trials: list, outcome: Any, driver: Any, wall_a: float, b: tuple, c: tuple) -> None:
    stored = [StoredTrial.of(t) for t in trials]
    timings = [{"trained": s.trained_epochs, **s.timings} for s in stored]
    epochs_a = sum(len(t["trained"]) for t in timings)
    work_a = sum(t.get("train_s", 0) + t.get("eval_s", 0) for t in timings) + outcome.base_eval_s
    # one-time: waiting for the worker's start (fork server imports), model load, then the first data check
    startup = driver.worker.warm_wait + (timings[0].get("setup_s", 0.0) if timings else 0.0)
    keys: dict[str, int] = {}
    for t, s in zip(trials, stored, strict=True):
        keys[s.training_key] = max(keys.get(s.training_key, 0), t.params["eval.epoch"])
    bound = sum(keys.values())
    overhead = wall_a - work_a
    n = len(trials)
    print(f"(a) reuse, warm worker          : {n} trials, {epochs_a} epochs trained, {wall_a:.1f} s")
    print(f"(c) no reuse, warm worker       : {n} trials, {c[0]} epochs trained, {c[1]:.1f} s")
    print(f"(b) no reuse, model per trial   : {n} trials, {b[0]} epochs trained, {b[1]:.1f} s")
    print(
        f"lower bound      : {bound} epochs ({len(keys)} training keys x highest epoch asked of each); "
        f"(a)/bound = {epochs_a / max(bound, 1):.2f} (target <= 1.1)"
    )
    print(f"orchestration overhead of (a): {overhead:.1f} s = {overhead / wall_a:.1%} of its wall time")
    print(
        f"  of which one-time worker start (imports, data check, model load): {startup:.1f} s; "
        f"per trial: {(overhead - startup) / max(n, 1):.2f} s ({(overhead - startup) / wall_a:.1%} of (a))"
    )
    print(f"reuse + warm worker: a/b = {wall_a / b[1]:.3f}")


def _replay_without_reuse(params_list: list[dict], base: list[str], warm: bool, clock: PhaseClock) -> int:
    """Each trial trained from scratch in a store of its own and scored without the cache.

    warm: one loaded model serves every trial (its adapter re-initialised per trial); otherwise every trial loads
    the model for training and again for scoring, and re-analyses the references. `clock` gets the phases.
    """
    import dataclasses

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.evaluate.scoring import Point, Scorer
    from qtts_sweep.sweep.spec import overrides_for
    from qtts_sweep.train.loop import ensure_epoch, resolve_run

    epochs = 0
    scorer = Scorer()
    for i, params in enumerate(params_list):
        cfg = load_config([*base, *overrides_for(params)])
        # a store of its own: nothing this trial asks for exists yet
        cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, store_dir=f"{cfg.paths.store_dir}/{i}"))
        with clock("dataset"):
            run = resolve_run(cfg)
        if not warm:
            scorer = Scorer()
        with clock("model"):
            loaded = scorer.ensure(cfg).loaded if warm else None
        with clock("training"):
            result = ensure_epoch(cfg, cfg.eval.epoch, run=run, progress=False, loaded=loaded)
        scorer.adapter_changed()
        epochs += len(result.trained)
        point = Point(run.key, cfg.eval.epoch, result.checkpoint, cfg.eval.lora_scale)
        if not warm:
            with clock("model"):  # what `score` would load first
                scorer.ensure(cfg)
        with clock("evaluation"):
            scorer.score(cfg, run.dataset, point, use_cache=False)
        print(f"replay ({'warm' if warm else 'cold'}) {i}: trained {len(result.trained)} epochs", flush=True)
    return epochs


def _overfit_for_eos(synth, lines: list, steps: int) -> None:
    """Briefly overfit the tiny base model on the lines (full parameters) so greedy decoding emits EOS."""
    import torch

    from qtts_sweep.model import modeling
    from qtts_sweep.model.loss import Example, compute_loss

    model = synth.model
    params = [p for n, p in model.named_parameters() if n.startswith("talker.") and "lora_" not in n]
    for p in params:
        p.requires_grad = True
    examples = []
    for line in lines:
        role, text_ids = modeling.tokenize_line(synth.loaded.tts, line.text)
        examples.append(Example(role, text_ids, torch.tensor(line.codes, dtype=torch.long), synth.spk_embedding))
    opt = torch.optim.Adam(params, lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        out = compute_loss(model, examples, 1.0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    for p in params:
        p.requires_grad = False


def bench_synth(
    n_lines: int = 8, overfit_steps: int = 300, repeats: int = 3, overrides: list[str] | None = None
) -> float:
    """Batched vs one-by-one greedy synthesis of lines of different lengths, identical codes both ways.

    The tiny model is overfit on the lines first so it emits EOS (a random model runs every line to its cap, which
    would make batching look better than it is). Also prints the metric cost per second of generated audio.
    """
    import dataclasses

    import numpy as np

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.data.prepare import prepare_dataset
    from qtts_sweep.evaluate.scoring import held_out_lines
    from qtts_sweep.evaluate.suite import MetricSuite
    from qtts_sweep.evaluate.synth import Synthesizer
    from qtts_sweep.model import modeling

    with tempfile.TemporaryDirectory(prefix="qtts-bench-synth-") as tmp:
        cfg = load_config(["model=tiny", f"paths.runs_dir={tmp}", *(overrides or [])])
        ds = prepare_dataset(cfg, progress=False)
        lines = held_out_lines(ds, "train", 200)
        lines = sorted(lines, key=lambda ln: len(ln.codes))  # spread of lengths: every k-th by length
        lines = lines[:: max(len(lines) // n_lines, 1)][:n_lines]
        synth = Synthesizer(cfg)
        ref = modeling.load_audio_24k(ds.ref_audio)
        synth.use(None, 0.0, modeling.speaker_embedding(synth.loaded, ref))
        t0 = time.perf_counter()
        _overfit_for_eos(synth, lines, overfit_steps)
        print(f"overfit the tiny model on {len(lines)} lines in {time.perf_counter() - t0:.1f} s", flush=True)
        greedy = dataclasses.replace(cfg.eval.decoding, mode="greedy", repetition_penalty=1.0)
        times: dict[str, list[float]] = {"batched": [], "sequential": []}
        outs: dict[str, list] = {}
        for i in range(repeats):
            for name in ("batched", "sequential") if i % 2 == 0 else ("sequential", "batched"):
                t0 = time.perf_counter()
                if name == "batched":
                    outs[name] = synth.generate(lines, greedy, batch_size=len(lines))
                else:
                    outs[name] = [synth.generate([ln], greedy, batch_size=1)[0] for ln in lines]
                times[name].append(time.perf_counter() - t0)
        same = all(
            a.codes.tolist() == b.codes.tolist() for a, b in zip(outs["batched"], outs["sequential"], strict=True)
        )
        eos = sum(not s.hit_cap for s in outs["batched"])
        frames = [s.codes.shape[0] for s in outs["batched"]]
        print(
            f"{len(lines)} lines, {min(frames)}-{max(frames)} frames, {eos} ended with EOS; "
            f"identical greedy codes batched vs one-by-one: {same}"
        )
        suite = MetricSuite(cfg, synth)
        target = suite.target(ref)

        audio_s = sum(len(s.wav) for s in outs["batched"]) / 24000
        t0 = time.perf_counter()
        for s in outs["batched"]:
            suite.audio_line(s.wav, s.line.audio, s.line.text, target)
        cost = (time.perf_counter() - t0) / max(audio_s, 1e-9)
    b, q = statistics.median(times["batched"]), statistics.median(times["sequential"])
    print(f"median batched {b:.2f} s, one-by-one {q:.2f} s (of {repeats} interleaved runs)")
    print(f"metric cost: {cost:.3f} s per second of audio ({audio_s:.1f} s scored; backends {suite.backends})")
    if not same:
        raise RuntimeError("batched and one-by-one greedy codes differ")
    print("target: ratio <= 0.5")
    ratio = b / q
    print(f"ratio: {ratio:.3f}")
    return float(np.float64(ratio))


BENCH_WORKERS_SWEEP = """# bench workers: 2 lr x 4 epochs x 2 scales, every point once (grid), no pruning
study_name: bench-workers
base: [experiment=tiny_demo]
n_trials: 16
sampler: grid
pruner: none
space:
  train.lr: {type: categorical, choices: [1.0e-3, 3.0e-3]}
  eval.epoch: {type: int, low: 1, high: 4}
  eval.lora_scale: {type: categorical, choices: [0.4, 1.0]}
"""


def bench_workers(overrides: list[str] | None = None, n_trials: int = 16) -> float:
    """The same 16-trial tiny sweep with 1 and with 2 drivers (one CPU thread each), side by side.

    n_trials < 16 runs that many points of the grid (a smoke test's size).

    Prints, for each, epochs trained vs the lower bound (distinct training keys x highest epoch asked of each) and
    (key, epoch) pairs trained twice, where the wall time goes (each driver's phases, phases.py, averaged over the
    drivers, which run side by side; the launcher's study set-up and the drivers' process start are in "other"),
    then the wall ratio 2 workers / 1 worker as `ratio: <x>`.
    """
    from qtts_sweep.model.tiny import build_tiny_model
    from qtts_sweep.sweep.launch import run_local_workers
    from qtts_sweep.sweep.report import format_training_summary, training_summary
    from qtts_sweep.sweep.storage import load_existing_study

    walls, columns = {}, {}
    with tempfile.TemporaryDirectory(prefix="qtts-bench-workers-") as tmp:
        sweep = Path(tmp) / "bench_workers.yaml"
        sweep.write_text(BENCH_WORKERS_SWEEP.replace("n_trials: 16", f"n_trials: {n_trials}"))
        models = Path(tmp) / "models"
        build_tiny_model(models / "tiny-seed0", seed=0)
        for n in (1, 2):
            runs = Path(tmp) / f"w{n}"
            runs.mkdir()
            ov = [*BENCH_SWEEP_OVERRIDES, "tracking=none", f"paths.models_dir={models}", f"paths.runs_dir={runs}"]
            t0 = time.perf_counter()
            prepared = run_local_workers(str(sweep), [*ov, *(overrides or [])], n, threads=1, log_dir=runs)
            walls[n] = time.perf_counter() - t0
            study = load_existing_study("bench-workers", prepared.storage_url)
            s = training_summary(study)
            done = sum(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.get_trials())
            print(f"{n} worker(s): {done} trials in {walls[n]:.1f} s; {format_training_summary(s)}", flush=True)
            print(f"  epochs trained / lower bound = {s['epochs_trained'] / max(s['lower_bound'], 1):.2f} "
                  "(target <= 1.1)")  # fmt: skip
            columns[f"{n} worker(s)"] = (walls[n], mean_phases(read(study)))
    print("\n".join(breakdown(columns)))
    print("target: ratio <= 0.65")
    ratio = walls[2] / walls[1]
    print(f"ratio: {ratio:.3f}")
    return ratio
