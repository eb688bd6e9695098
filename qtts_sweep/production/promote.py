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

from qtts_sweep.config.schema import Config
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.production.bundle import BUNDLE_FILE, Bundle, BundleError, sha256
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


def _already_promoted(out: Path, study_name: str, trial, ckpt: Path) -> Bundle | None:
    """The bundle at `out` if it is this very trial's (same study, trial and adapter bytes)."""
    if not (out / BUNDLE_FILE).is_file():
        return None
    try:
        existing = Bundle.load(out, check_model=False)
    except BundleError:
        return None
    same = (
        existing.origin.get("study") == study_name
        and existing.origin.get("trial") == trial.number
        and sha256(existing.adapter) == sha256(_adapter_file(ckpt))
    )
    return existing if same else None


def _adapter_file(ckpt: Path) -> Path:
    from qtts_sweep.train.store import CheckpointRef, CheckpointStore

    ref = CheckpointRef.from_path(ckpt)
    return CheckpointStore(ref.root).adapter_file(ref.key, ref.epoch)


def promote(
    cfg: Config, study_name: str, storage: str, trial_number: int | None = None, name: str | None = None
) -> PromotionResult:
    """Select, bundle, score on the test split, register. Promoting the same trial again changes nothing."""
    from qtts_sweep.model.modeling import ensure_model_folder
    from qtts_sweep.sweep.selection import select_for_promotion
    from qtts_sweep.sweep.storage import load_existing_study
    from qtts_sweep.tracking.mlflow_tracker import make_tracker
    from qtts_sweep.train.store import model_identity

    study = load_existing_study(study_name, storage)
    trial, why = select_for_promotion(study, cfg.eval.objective, trial_number)
    heard = preference_note(study, trial.number, study_name)
    name = name or study_name
    out = Path(cfg.paths.production_dir) / name
    ckpt = Path(trial.user_attrs["checkpoint"])
    existing = _already_promoted(out, study_name, trial, ckpt)
    if existing is not None:
        return PromotionResult(
            out, trial.number, False, existing.metrics.get("test", {}), existing.origin.get("model_version"), why,
            existing.metrics.get("stress"), heard,
        )  # fmt: skip
    from qtts_sweep.train.store import CheckpointRef, CheckpointStore

    # Checked against its manifest before anything is copied: a damaged adapter must not reach production.
    ref = CheckpointRef.from_path(ckpt)
    CheckpointStore(ref.root).verify(ref.key, ref.epoch)
    tcfg = trial_config(cfg, ckpt, trial)
    gate = stress_gate(tcfg, ckpt, cfg.production.stress)  # raises PromotionRefused before anything is written
    test = score_on_test(tcfg, ckpt)
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
            "study": study_name,
            "trial": trial.number,
            "storage": redact(storage),
            "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
            "training_key": trial.user_attrs.get("training_key"),
            "epoch": tcfg.eval.epoch,
            "params": trial.params,
            "selection": why,
        },
        metrics={
            "objective_val": trial.values[0] if len(trial.values) == 1 else trial.values,
            "val": trial.user_attrs.get("summary", {}),
            "test": test,
            **({"stress": gate.as_dict()} if gate else {}),
            **({"preference": heard} if heard else {}),
        },
    ).save(out, ckpt)
    tags = {"study": study_name, "trial": str(trial.number)}
    run_id = trial.user_attrs.get("mlflow_run_id")
    tracker = make_tracker(cfg.tracking)
    if gate is not None:
        tracker.log_parent_metrics(run_id, gate.metrics())  # on the trial's own run, beside its val metrics
    version = tracker.register_bundle(f"qtts-{name}", out, run_id, tags)
    if version is not None:
        bundle.update_origin(model_version=version)
    return PromotionResult(out, trial.number, True, test, version, why, gate.as_dict() if gate else None, heard)


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


def trial_config(cfg: Config, ckpt: Path, trial) -> Config:
    """The trial's config: the checkpoint's saved config, the trial's eval params, today's paths and tracking."""
    from omegaconf import OmegaConf

    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(ckpt / "config.yaml"))
    tcfg: Config = OmegaConf.to_object(saved)
    epoch = int(trial.params.get("eval.epoch", tcfg.eval.epoch))
    scale = round(float(trial.params.get("eval.lora_scale", tcfg.eval.lora_scale)), 10)  # as the sweep ran it
    return dataclasses.replace(
        tcfg,
        paths=cfg.paths,
        tracking=cfg.tracking,
        train=dataclasses.replace(tcfg.train, epochs=epoch),
        eval=dataclasses.replace(tcfg.eval, epoch=epoch, lora_scale=scale),
    )


def score_on_test(cfg: Config, ckpt: Path) -> dict[str, float]:
    """The promoted pair on the held-out test split (never used for selection); cached like any evaluation."""
    from qtts_sweep.evaluate.scoring import Point, Scorer
    from qtts_sweep.train.loop import resolve_run

    test_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, split="test"))
    run = resolve_run(test_cfg)
    ev = Scorer().score(test_cfg, run.dataset, Point(run.key, cfg.eval.epoch, ckpt, cfg.eval.lora_scale))
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
