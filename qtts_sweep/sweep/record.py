"""What a finished trial leaves behind: its Optuna user attributes and its MLflow run's payload.

Owns: turning a worker's result (or failure) into the trial's user attributes (`training_key`, `checkpoint`,
`eval_dir`, `summary`, `constraints`, `reused`, `fail_reason`, ...) and into the arguments of the tracker's
`finish_trial`. Does not own: telling Optuna the trial's state (the driver does, after this), MLflow calls
themselves (qtts_sweep.tracking).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fail_reason(kind: str, message: str) -> str:
    """One line for tables and tags: the exception kind and the first line of its message."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{kind}: {first}"[:1000]


def constraint_values(summary: dict[str, float]) -> list[float]:
    """Optuna constraint values (<= 0 feasible) in a stable order, from the `constraint_*` summary keys."""
    return [v for k, v in sorted(summary.items()) if k.startswith("constraint_")]


def complete_attrs(result: dict[str, Any]) -> dict[str, Any]:
    """User attributes of a completed trial (read by report, promotion, gc and the next driver)."""
    return {
        "training_key": result["training_key"],
        "checkpoint": result["checkpoint"],
        "eval_dir": result["eval_dir"],
        "trained_epochs": result["trained"],
        "epoch_reached": max([int(e) for e in result.get("epoch_metrics", {})] or [0]),
        "timings": result.get("timings", {}),
        "constraints": constraint_values(result["summary"]),
        "reused": not result["trained"],
        "summary": {k: v for k, v in result["summary"].items() if not k.endswith("_std")},
        "lines_used": result.get("lines_used"),
        "lines_total": result.get("lines_total"),
    }


def complete_run(result: dict[str, Any], training_run: str | None, steps: dict[int, dict]) -> dict[str, Any]:
    """Keyword arguments of `tracker.finish_trial(run_id, "FINISHED", **...)` for a completed trial."""
    return {
        "metrics": {**result["summary"], "objective": result["objective"]},
        "params": {
            "training_key": result["training_key"],
            "reused": bool(not result["trained"]),
            "checkpoint": result["checkpoint"],
        },
        "tags": {
            "training_run_id": training_run or "",
            "checkpoint": result["checkpoint"],
            "training_key": result["training_key"],
            "metric_backends": result["backends"],
        },
        "artifacts": Path(result["eval_dir"]),
        "table": result["per_line"],
        "steps": steps,
    }


def record_complete(
    trial, result: dict, tracker: Any, run_id: str | None, training_run: str | None, steps: dict, runs_dir=None
):
    for key, value in complete_attrs(result).items():
        trial.set_user_attr(key, value)
    if runs_dir is not None:
        upload_wavs(trial, Path(result["eval_dir"]), artifact_dir(runs_dir))
    tracker.finish_trial(run_id, "FINISHED", **complete_run(result, training_run, steps))


def artifact_dir(runs_dir: str | Path) -> Path:
    """Optuna's artifact store of every study under runs/ (`optuna-dashboard ... --artifact-dir` this folder)."""
    return Path(runs_dir) / "optuna-artifacts"


def upload_wavs(trial, eval_dir: Path, store_dir: Path) -> list[str]:
    """Each synthesized wav of a trial as an Optuna artifact (audio/wav), so optuna-dashboard's trial page plays
    it. Returns the artifact ids."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    return [
        upload_artifact(artifact_store=store, file_path=str(wav), study_or_trial=trial, mimetype="audio/wav")
        for wav in sorted((eval_dir / "wavs").glob("*.wav"))
    ]


def record_training(trial, key: str | None, trained: list[int], reached: int) -> None:
    """What a trial trained (also when it was pruned or failed): the training summary counts every epoch."""
    if key:
        trial.set_user_attr("training_key", key)
        trial.set_user_attr("trained_epochs", trained)
        trial.set_user_attr("epoch_reached", reached)


def record_failure(trial, tracker: Any, run_id: str | None, kind: str, message: str, steps: dict | None) -> str:
    reason = fail_reason(kind, message)
    trial.set_user_attr("fail_reason", reason)
    tags = {"fail_reason": reason, "fail_detail": message[-4000:]}
    tracker.finish_trial(run_id, "FAILED", tags=tags, steps=steps)
    return reason


def record_pruned(tracker: Any, run_id: str | None, epoch: int, steps: dict) -> None:
    tracker.finish_trial(run_id, "KILLED", tags={"pruned_at_epoch": epoch}, steps=steps)


def record_interrupted(trial, tracker: Any, run_id: str | None) -> None:
    trial.set_user_attr("interrupted", True)
    tracker.finish_trial(run_id, "KILLED", tags={"fail_reason": "interrupted (Ctrl-C); re-queued"})


def record_scored_point(storage: str, study_name: str, params: dict[str, Any], max_epochs: int, result: dict) -> None:
    """A completed trial for a point scored outside a sweep (the dry run), so that `promote` can read it like any
    other: `params` are `eval.epoch` / `eval.lora_scale`, `result` what `complete_attrs` reads plus `objective`."""
    import math

    import optuna

    distributions = {
        "eval.epoch": optuna.distributions.IntDistribution(1, max_epochs),
        "eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 2.0),
    }
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
    value = result["objective"] if math.isfinite(result["objective"]) else 0.0
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, user_attrs=complete_attrs(result)
        )
    )
