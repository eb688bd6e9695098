"""Promotion: a sweep's chosen (checkpoint, scale) -> a production bundle, scored once on the test split, registered
as an MLflow model version with the `production` alias (the replaced one gets `previous`).

Owns: the promotion steps and their idempotence (promoting the same trial again changes nothing). Does not own:
which trial is best (qtts_sweep.sweep.selection), the bundle format (bundle.py), scoring (qtts_sweep.evaluate),
MLflow calls (qtts_sweep.tracking).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.production.bundle import BUNDLE_FILE, Bundle, BundleError, sha256
from qtts_sweep.train.store import CheckpointRef, CheckpointStore
from qtts_sweep.util.urls import redact


@dataclass
class PromotionResult:
    bundle: Path
    trial: int
    changed: bool
    test_metrics: dict[str, float]
    model_version: str | None = None
    why: str = ""  # how the trial was chosen (best objective, or the tie-break rule among trials tied within noise)
    stress: dict | None = None  # the production gate's measurements (stress.py), None when it was off
    preference: str = ""  # what listeners said about the promoted trial (qtts-sweep listen), if anything


@dataclass
class PromotionPoint:
    """What promotion needs of a (checkpoint, scale) pair: a sweep's trial (`PromotionPoint.of_trial`) or a point scored
    outside a sweep (the dry run)."""

    checkpoint: CheckpointRef
    params: dict[str, Any]  # the searched values (`eval.epoch`, `eval.lora_scale`, ...), as the trial ran them
    objective_val: float | list[float] | None  # the trial's value(s) on the val split
    val: dict[str, float]  # its val-split metrics
    study: str  # where it comes from (the bundle's origin)
    trial: int
    storage: str = ""
    mlflow_run_id: str | None = None
    why: str = ""  # how it was chosen

    @classmethod
    def of_trial(cls, trial: Any, study: str, storage: str, why: str) -> PromotionPoint:
        from qtts_sweep.sweep.result import StoredTrial
        from qtts_sweep.sweep.selection import SelectionError
        from qtts_sweep.util.problems import Problem

        stored = StoredTrial.of(trial)
        if stored.checkpoint is None:
            rule = f"names no stored checkpoint in study `{study}`"
            raise SelectionError([Problem("trial", trial.number, rule, "promote a trial a sweep completed")])
        values = trial.values[0] if trial.values and len(trial.values) == 1 else trial.values
        return cls(stored.checkpoint, dict(trial.params), values, stored.summary, study, trial.number, storage,
                   stored.mlflow_run_id, why)  # fmt: skip


def _already_promoted(out: Path, point: PromotionPoint) -> Bundle | None:
    """The bundle at `out` if it is this very point's (same study, trial and adapter bytes)."""
    if not (out / BUNDLE_FILE).is_file():
        return None
    try:
        existing = Bundle.load(out, check_model=False)
    except BundleError:
        return None
    same = (
        existing.origin.get("study") == point.study
        and existing.origin.get("trial") == point.trial
        and sha256(existing.adapter) == sha256(_adapter_file(point.checkpoint))
    )
    return existing if same else None


def _adapter_file(ref: CheckpointRef) -> Path:
    return CheckpointStore(ref.root).adapter_file(ref.key, ref.epoch)


def promote(
    cfg: Config, study_name: str, storage: str, trial_number: int | None = None, name: str | None = None
) -> PromotionResult:
    """Select the sweep's pick (or `trial_number`), then `promote_point` it. Promoting the same trial again changes
    nothing."""
    from qtts_sweep.sweep.selection import select_for_promotion
    from qtts_sweep.sweep.storage import load_existing_study

    study = load_existing_study(study_name, storage)
    trial, why = select_for_promotion(study, cfg.eval.objective, trial_number)
    heard = preference_note(study, trial.number, study_name)
    return promote_point(cfg, PromotionPoint.of_trial(trial, study_name, storage, why), name or study_name, heard)


def promote_point(cfg: Config, point: PromotionPoint, name: str, heard: str = "") -> PromotionResult:
    """Bundle one (checkpoint, scale) point, score it on the test split, register it. Used by `promote` for a
    sweep's trial and by the dry run for the one point it scored (no Optuna trial involved)."""
    from qtts_sweep.model.modeling import ensure_model_folder
    from qtts_sweep.tracking.mlflow_tracker import make_tracker
    from qtts_sweep.tracking.registry import make_registry
    from qtts_sweep.train.store import model_identity

    out = Path(cfg.paths.production_dir) / name
    existing = _already_promoted(out, point)
    if existing is not None:
        return PromotionResult(
            out, point.trial, False, existing.metrics.get("test", {}), existing.origin.get("model_version"),
            point.why, existing.metrics.get("stress"), heard,
        )  # fmt: skip
    ref = point.checkpoint
    ckpt = ref.path
    # Checked against its manifest before anything is copied: a damaged adapter must not reach production.
    CheckpointStore(ref.root).verify(ref.key, ref.epoch)
    tcfg = trial_config(cfg, ckpt, point.params)
    gate = stress_gate(tcfg, ckpt, cfg.production.stress)  # raises PromotionRefused before anything is written
    test = score_on_test(tcfg, ref)
    source = ensure_model_folder(tcfg.model)
    bundle = Bundle(
        base_model=source,
        base_model_identity=model_identity(source),
        base_tiny=tcfg.model.tiny,
        lora=tcfg.lora,
        lora_scale=float(tcfg.eval.lora_scale),
        batch_size=tcfg.eval.batch_size,
        decoding=tcfg.eval.decoding,
        origin={
            "study": point.study,
            "trial": point.trial,
            "storage": redact(point.storage),
            "mlflow_run_id": point.mlflow_run_id,
            "training_key": ref.key,
            "epoch": tcfg.eval.epoch,
            "params": point.params,
            "selection": point.why,
        },
        metrics={
            "objective_val": point.objective_val,
            "val": point.val,
            "test": test,
            **({"stress": gate.as_dict()} if gate else {}),
            **({"preference": heard} if heard else {}),
        },
    ).save(out, ckpt)
    tags = {"study": point.study, "trial": str(point.trial)}
    tracker = make_tracker(cfg.tracking)
    if gate is not None:
        tracker.log_parent_metrics(point.mlflow_run_id, gate.metrics())  # on the trial's own run, beside its val
    version = make_registry(cfg.tracking).register_bundle(f"qtts-{name}", out, point.mlflow_run_id, tags)
    if version is not None:
        bundle.update_origin(model_version=version)
    return PromotionResult(out, point.trial, True, test, version, point.why, gate.as_dict() if gate else None, heard)


def preference_note(study, number: int, study_name: str) -> str:
    """What blind A/B listeners said about trial `number` (and whom they preferred), or "" when nobody listened."""
    from qtts_sweep.sweep import preference

    tallies = preference.tally(study)
    if number not in tallies:
        return ""
    note = f"listeners: {tallies[number].describe()}"
    best = preference.preferred(tallies)
    if best is not None and best != number:
        note += (
            f"; they prefer trial {best} ({tallies[best].describe()}): qtts-sweep promote {study_name} --trial {best}"
        )
    return note


def stress_gate(tcfg: Config, ckpt: Path, cfg):
    """The production gate (stress.py) on the pair as the bundle will run it; None when `cfg.lines` is 0."""
    if cfg.lines <= 0:
        return None
    from qtts_sweep.evaluate.synth import Synthesizer
    from qtts_sweep.production import stress

    texts = stress.read_lines(cfg.text_file, cfg.lines)
    synth = Synthesizer(tcfg)
    synth.use(ckpt, tcfg.eval.lora_scale)
    report = stress.measure(synth, texts, tcfg.eval.decoding, tcfg.eval.batch_size, cfg, cfg.text_file)
    del synth
    found = stress.problems(report, cfg)
    if found:
        raise stress.PromotionRefused(found)
    return report


def trial_config(cfg: Config, ckpt: Path, params: dict[str, Any]) -> Config:
    """The trial's config: the checkpoint's saved config, the trial's eval params, today's paths and tracking."""
    from omegaconf import OmegaConf

    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(ckpt / "config.yaml"))
    tcfg: Config = OmegaConf.to_object(saved)
    epoch = int(params.get("eval.epoch", tcfg.eval.epoch))
    scale = round(float(params.get("eval.lora_scale", tcfg.eval.lora_scale)), 10)  # as the sweep ran it
    return dataclasses.replace(
        tcfg,
        paths=cfg.paths,
        tracking=cfg.tracking,
        train=dataclasses.replace(tcfg.train, epochs=epoch),
        eval=dataclasses.replace(tcfg.eval, epoch=epoch, lora_scale=scale),
    )


def score_on_test(cfg: Config, ref: CheckpointRef) -> dict[str, float]:
    """The promoted pair on the held-out test split (never used for selection); cached like any evaluation. The
    training key is the checkpoint's own (not recomputed from the config, which would hash the model folder)."""
    from qtts_sweep.data.prepare import load_dataset
    from qtts_sweep.evaluate.scoring import Point, Scorer

    test_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, split="test"))
    dataset = load_dataset(test_cfg, progress=True)
    ev = Scorer().score(test_cfg, dataset, Point(ref.key, cfg.eval.epoch, ref.path, cfg.eval.lora_scale))
    return {"objective": ev.objective, **{k: v for k, v in ev.summary.items() if not k.endswith("_std")}}


def format_promotion(r: PromotionResult) -> str:
    if not r.changed:
        return f"trial {r.trial} is already the promoted bundle at {r.bundle}: nothing changed"
    lines = [f"promoted trial {r.trial} to {r.bundle}"]
    if r.why:
        lines.append(f"  chosen because {r.why}")
    if r.model_version:
        lines.append(f"  MLflow model version {r.model_version} now has alias `production`")
    shown = [k for k in ("objective", *REGISTRY.table_keys()) if k in r.test_metrics]
    lines.append("  test split (never used for selection): " + ", ".join(f"{k} {r.test_metrics[k]:.4g}" for k in shown))
    if r.stress:
        from qtts_sweep.production.stress import StressReport

        lines.append(
            "  " + StressReport(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.stress.items()}).describe()
        )
    if r.preference:
        lines.append(f"  {r.preference}")
    lines.append(f'  synthesize: qtts-sweep synth --production {r.bundle / BUNDLE_FILE} --text "Hello."')
    return "\n".join(lines)
