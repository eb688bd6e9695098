"""`qtts-sweep synth`: score held-out lines of one (checkpoint, scale) or the base model, or speak given text.

Owns the command's choices (which checkpoint, which point) and its printed summary; scoring itself is
`Scorer.score` (scoring.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.evaluate.scoring import EvalResult, Point, Scorer
from qtts_sweep.evaluate.synth import Line


def _checkpoint_for(cfg: Config, run: Any, use_base: bool) -> Path | None:
    from qtts_sweep.util.problems import Problem, ValidationError

    if use_base:
        return None
    ckpt = run.store.epoch_dir(run.key, cfg.eval.epoch)
    if cfg.eval.epoch not in run.store.epochs(run.key):
        raise ValidationError(
            [
                Problem(
                    "eval.epoch",
                    cfg.eval.epoch,
                    f"no stored checkpoint for training key {run.key} at this epoch",
                    f"train it first: qtts-sweep train <same overrides> train.epochs={cfg.eval.epoch}"
                    " (or pass --base for the base model)",
                )
            ],
            "synthesis request",
        )
    return ckpt


def run_synth(cfg: Config, texts: list[str] | None = None, use_base: bool = False, out_dir: str | None = None) -> str:
    """`qtts-sweep synth`: held-out lines with metrics (cached), or given texts to wav files; returns a summary."""
    from qtts_sweep.train.loop import resolve_run

    run = resolve_run(cfg)
    ckpt = _checkpoint_for(cfg, run, use_base)
    point = Point.base() if ckpt is None else Point(run.key, cfg.eval.epoch, ckpt, cfg.eval.lora_scale)
    where = "base model" if ckpt is None else f"{ckpt} at scale {point.scale}"
    scorer = Scorer()
    if texts:
        return speak(cfg, scorer, run.dataset, point, texts, where, out_dir)
    return format_eval(scorer.score(cfg, run.dataset, point), where, cfg.eval.split)


def speak(cfg: Config, scorer: Scorer, dataset: Any, point: Point, texts: list[str], where: str, out_dir: str | None):
    """Given texts to wav files from `point` (no metrics: there is no ground truth to score against)."""
    import soundfile as sf

    from qtts_sweep.model import modeling

    synth = scorer.ensure(cfg)
    spk = None
    if point.checkpoint is None:
        spk = modeling.speaker_embedding(synth.loaded, scorer.reference(dataset.ref_audio))
    synth.use(point.checkpoint, point.scale, spk)
    lines = [Line(f"text{i:03d}", t) for i, t in enumerate(texts)]
    out = Path(out_dir or Path(cfg.paths.runs_dir) / "synth")
    out.mkdir(parents=True, exist_ok=True)
    report = [f"synthesized {len(lines)} line(s) from {where} ({cfg.eval.decoding.mode} decoding):"]
    for k in range(cfg.eval.num_seeds):
        for s in synth.generate(lines, cfg.eval.decoding, cfg.eval.batch_size, seed_index=k):
            path = out / f"{s.line.id}_s{k}.wav"
            sf.write(path, s.wav, 24000)
            flag = "  [no EOS: hit the token cap]" if s.hit_cap else ""
            report.append(f"  {path}  ({len(s.wav) / 24000:.2f} s){flag}")
    return "\n".join(report)


def format_eval(result: EvalResult, where: str, split: str) -> str:
    s = result.summary
    keys = [k for k in sorted(s) if not k.endswith("_std")]
    lines = [
        f"{len(result.per_line)} {split} line(s) from {where}{' (cached)' if result.cached else ''}",
        f"  objective: {result.objective:.4f}",
    ]
    lines += [f"  {k:>22}: {s[k]:.4f}" + (f" ± {s[k + '_std']:.4f}" if k + "_std" in s else "") for k in keys]
    lines.append(f"  wavs and per-line metrics: {result.dir}")
    return "\n".join(lines)
