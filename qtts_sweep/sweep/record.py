"""What a finished trial leaves behind: its Optuna user attributes and its MLflow run's payload.

Owns: writing a worker's `TrialResult` (its `user_attrs()`, result.py) or failure onto the trial (`fail_reason`,
what a pruned or failed trial trained) and turning it into the arguments of the tracker's `finish_trial`. Does
not own: telling Optuna the trial's state (the driver does, after this), MLflow calls themselves
(qtts_sweep.tracking).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtts_sweep.sweep.result import TrialResult


def fail_reason(kind: str, message: str) -> str:
    """One line for tables and tags: the exception kind and the first line of its message."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{kind}: {first}"[:1000]


def complete_run(result: TrialResult, training_run: str | None, steps: dict[int, dict]) -> dict[str, Any]:
    """Keyword arguments of `tracker.finish_trial(run_id, "FINISHED", **...)` for a completed trial."""
    checkpoint = result.checkpoint_path or ""
    return {
        "metrics": {**result.summary, "objective": result.objective},
        "params": {"training_key": result.training_key or "", "reused": result.reused, "checkpoint": checkpoint},
        "tags": {
            "training_run_id": training_run or "",
            "checkpoint": checkpoint,
            "training_key": result.training_key or "",
            "metric_backends": result.backends,
        },
        "artifacts": result.eval_dir,
        "table": result.per_line,
        "steps": steps,
    }


def record_complete(
    trial, result: TrialResult, tracker: Any, run_id: str | None, training_run: str | None, steps: dict, runs_dir=None
):
    for key, value in result.user_attrs().items():
        trial.set_user_attr(key, value)
    if runs_dir is not None:
        upload_wavs(trial, result.eval_dir, artifact_dir(runs_dir))
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
