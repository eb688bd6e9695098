"""`qtts-sweep dry-run`: the whole path at a published model's real size, random weights, a few demo lines.

Builds (once, cached under `paths.models_dir`) a random-weight Base model with the published sizes of
`model=qwen3_tts_1.7b_base` / `qwen3_tts_0.6b_base` (qtts_sweep/model/shapes/), the real Qwen text tokenizer and
the 12 Hz codec at its real size, then runs the package's own entry points on the chosen device in a temporary
runs folder: prepare (real codec), one LoRA epoch of a few steps, checkpoint save + load, a short greedy
synthesis per held-out line, metrics, promote (test split) and export. It prints parameter counts (checked
against the published size), peak memory and time per phase, seconds per training step and per synthesized
second, and a memory plan for training in bf16 at the dataset's longest line.

Three modules: this one runs the path and meters its phases; memory_plan.py measures and states the memory plan
(terms in docs/real-size.md); dry_run_report.py checks the parameter counts and writes the report. Not here: any
of the pipeline's logic (prepare, train, evaluate, promote are called, never copied) and the model shapes
(model/tiny.py + data).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.data.manifest import read_manifest
from qtts_sweep.tools.dry_run_report import DryRunReport, PhaseRow, check_published, count_params, dry_run_shape
from qtts_sweep.tools.memory_plan import FRAME_RATE, GIB, longest_line, measure_plan
from qtts_sweep.util.problems import Problem, ValidationError

STUDY = "dryrun"


class PhaseMeter:
    """Wall time and peak memory per phase: CUDA max allocated on a GPU, else the process's peak RSS (VmHWM,
    reset at each phase start through /proc/self/clear_refs)."""

    def __init__(self, device: str, log: Callable[[str], None]):
        self.cuda = device.startswith("cuda")
        self.rows: list[PhaseRow] = []
        self.log = log

    @property
    def kind(self) -> str:
        return "CUDA peak allocated" if self.cuda else "peak RSS (CPU)"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_rss_peak()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if self.cuda else _rss_peak()
        self.rows.append(PhaseRow(name, time.perf_counter() - t0, peak))
        self.log(f"  {name}: {self.rows[-1].seconds:.1f} s, {self.kind} {peak / GIB:.2f} GiB")


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc keeps it otherwise), so the next phase's
    model load and its peak RSS start from what is really in use."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _reset_rss_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak is then the process-wide high-water mark


def _rss_peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _durations(rows: list) -> dict[str, float]:
    import soundfile as sf

    return {r.id: sf.info(str(r.audio)).duration for r in rows if r.audio.is_file()}


def pick_lines(cfg: Config, n_lines: int, out: Path) -> tuple[Path, list, dict[str, float]]:
    """A JSONL manifest (absolute paths) of `n_lines` lines of the configured dataset: its longest line and the
    shortest others. Returns (manifest, all rows, durations)."""
    rows, problems = read_manifest(cfg.data)
    durations = _durations(rows)
    usable = [r for r in rows if r.id in durations]
    if len(usable) < 3:
        raise ValidationError(
            problems or [Problem("data.manifest", cfg.data.manifest, "has fewer than 3 usable lines", "add lines")],
            "dry run",
        )
    by_length = sorted(usable, key=lambda r: durations[r.id])
    chosen = [by_length[-1], *by_length[: max(n_lines, 3) - 1]]
    ref = cfg.data.ref_audio
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for r in chosen:
            row = {"id": r.id, "text": r.text, "audio": str(r.audio.resolve()), "language": r.language}
            row["ref_audio"] = str(Path(ref).resolve()) if ref else str(r.ref_audio.resolve())
            f.write(json.dumps(row) + "\n")
    return manifest, usable, durations


def dry_run_config(cfg: Config, folder: Path, manifest: Path, runs: Path, steps: int, frames: int) -> Config:
    """The configured run, pointed at the random model, the picked lines and a temporary runs folder."""
    r = dataclasses.replace
    data = r(
        cfg.data, name="dryrun", format="jsonl", manifest=str(manifest), split=r(cfg.data.split, min_val=1, min_test=1)
    )
    model = r(cfg.model, source=str(folder), tiny=False, local_files_only=True)
    train = r(cfg.train, epochs=1, max_epochs=1, batch_size=1, max_steps_per_epoch=steps)
    # A random model never emits EOS: every line runs to the cap, `frames` frames (cap = min_frames - 1 frames).
    dec = r(cfg.eval.decoding, mode="greedy", frames_per_char=1e-6, min_frames=frames + 1, repetition_penalty=1.0)
    ev = r(cfg.eval, epoch=1, split="val", num_seeds=1, decoding=dec)
    paths = r(
        cfg.paths,
        runs_dir=str(runs),
        data_dir=str(runs / "data"),
        store_dir=str(runs / "store"),
        production_dir=str(runs / "production"),
    )
    return r(cfg, model=model, data=data, train=train, eval=ev, paths=paths, tracking=r(cfg.tracking, backend="none"))


def _timed(synth: Any, totals: dict[str, float]) -> None:
    """Add up the wall time of this synthesizer's generate calls and the audio they produce in `totals`."""
    generate = synth.generate

    def timed_generate(lines, dec, batch_size, seed_index=0, decode_audio=True):
        t0 = time.perf_counter()
        out = generate(lines, dec, batch_size, seed_index, decode_audio)
        totals["synth_s"] += time.perf_counter() - t0
        totals["synth_audio_s"] += sum(s.codes.shape[0] for s in out) / FRAME_RATE
        return out

    synth.generate = timed_generate


def run_package_path(cfg: Config, meter: PhaseMeter, measure: Callable[[Any, Any], None]) -> dict[str, Any]:
    """The package's own entry points, in order; `measure(loaded, dataset)` runs on the loaded training model
    before its epoch. The only place that calls into prepare / train / evaluate / promote / export."""
    from qtts_sweep.data.prepare import prepare_dataset
    from qtts_sweep.evaluate.scoring import Point, Scorer
    from qtts_sweep.model import modeling
    from qtts_sweep.model.lora import apply_lora
    from qtts_sweep.production.export import export_merged
    from qtts_sweep.production.promote import PromotionPoint, promote_point
    from qtts_sweep.train.loop import ensure_epoch, resolve_run, steps_per_epoch

    with meter.phase("prepare (real-size codec)"):
        ds = prepare_dataset(cfg, progress=False)
    with meter.phase("load model + memory plan"):
        loaded = modeling.load_model(cfg.model)
        apply_lora(loaded.model, cfg.lora, seed=cfg.train.seed)
        measure(loaded, ds)
    with meter.phase("train 1 epoch + checkpoint save"):
        t0 = time.perf_counter()
        run = resolve_run(cfg, ds)
        result = ensure_epoch(cfg, 1, run=run, progress=False, loaded=loaded)
        epoch_s = time.perf_counter() - t0
        del loaded
        release_memory()
    totals = {"synth_s": 0.0, "synth_audio_s": 0.0}
    with meter.phase("checkpoint load + synthesis + ceiling + metrics"):
        scorer = Scorer()
        _timed(scorer.ensure(cfg), totals)
        ev = scorer.score(cfg, ds, Point(run.key, 1, result.checkpoint, cfg.eval.lora_scale))
        del scorer
        release_memory()
    with meter.phase("promote (test split scored)"):
        # no production gate: random weights never stop, so it would refuse (tests/test_stress_gate.py covers it)
        no_gate = dataclasses.replace(cfg.production.stress, lines=0)
        gate_off = dataclasses.replace(cfg, production=dataclasses.replace(cfg.production, stress=no_gate))
        params = {"eval.epoch": 1, "eval.lora_scale": cfg.eval.lora_scale}
        point = PromotionPoint(result.ref, params, ev.objective, ev.summary, STUDY, 0, why="the dry run's one point")
        promoted = promote_point(gate_off, point, STUDY)
        release_memory()
    with meter.phase("export merged model"):
        exported = export_merged(cfg, str(promoted.bundle), Path(cfg.paths.runs_dir) / "export")
        release_memory()
    return {
        "train_epoch_s": epoch_s,
        "train_steps": steps_per_epoch(cfg, len(ds.splits["train"]))[0],
        "eval": ev,
        "bundle": str(promoted.bundle),
        "export": str(exported),
        **totals,
    }


def run_dry_run(
    cfg: Config,
    n_lines: int = 4,
    steps: int = 2,
    frames: int = 8,
    keep: str | None = None,
    log: Callable[[str], None] = print,
) -> DryRunReport:
    """Everything `qtts-sweep dry-run` does; see the module docstring."""
    from qtts_sweep.model.modeling import resolve_device
    from qtts_sweep.model.tiny import build_shaped_model

    shape = dry_run_shape(cfg)
    params = count_params(shape)
    published, _ = check_published(shape, params)  # before anything heavy: wrong shape data stop here
    device = resolve_device(cfg.model.device)
    meter = PhaseMeter(device, log)
    folder = Path(cfg.paths.models_dir).resolve() / f"{cfg.model.name}-random-seed{cfg.seed}"
    log(f"dry run of {cfg.model.name} (shape {shape}, random weights) on {device}")
    with meter.phase("build random model (cached)"):
        if not (folder / "config.json").is_file():
            build_shaped_model(folder, shape, seed=cfg.seed)
    tmp = tempfile.TemporaryDirectory(prefix="qtts-dry-run-") if keep is None else None
    runs = Path(keep or tmp.name).resolve()
    try:
        manifest, rows, durations = pick_lines(cfg, n_lines, runs / "lines")
        dcfg = dry_run_config(cfg, folder, manifest, runs / "runs", steps, frames)
        holder: dict[str, Any] = {}

        def measure(loaded: Any, ds: Any) -> None:
            holder["longest"] = longest_line(loaded, rows, durations)
            holder["lora"] = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
            holder["plan"] = measure_plan(loaded, dcfg, holder["longest"], log)

        out = run_package_path(dcfg, meter, measure)
    finally:
        if tmp is not None:
            tmp.cleanup()
    params["lora"] = params["trainable"] = holder["lora"]
    longest = {k: v for k, v in holder["longest"].items() if k != "text_ids"}
    return DryRunReport(
        shape=shape,
        device=device,
        params=params,
        published=published,
        phases=meter.rows,
        meter_kind=meter.kind,
        plan=holder["plan"],
        train_steps=out["train_steps"],
        train_epoch_s=out["train_epoch_s"],
        synth_s=out["synth_s"],
        synth_audio_s=out["synth_audio_s"],
        longest=longest,
        outputs={"model": str(folder), **({"runs": str(runs)} if keep else {})},
    )
