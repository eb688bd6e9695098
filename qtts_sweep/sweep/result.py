"""A trial's result in one shape: `TrialResult` (what the worker returns for a completed trial, over the pipe as
is) and `StoredTrial` (what a finished trial carries in Optuna, read back typed).

The worker builds a `TrialResult` from the training and evaluation results (`TrialResult.of`); the driver records
it (record.py: its `user_attrs()` become the trial's user attributes, `record.complete_run` the tracker's payload).
Report, gc, promote, listen and selection read a trial through `StoredTrial.of(trial)`, never by attribute-name
strings of their own. `reused` is one type everywhere: a bool (the trial trained nothing).

Owns: the two records and the names of the user attributes a completed trial carries. Does not own: recording
them (record.py), re-queue marks (recovery.py), multi-fidelity counts while a trial runs (fidelity.py writes
`lines_used` / `lines_total` under the same names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.train.store import CheckpointRef


@dataclass
class TrialResult:
    """A completed trial: the checkpoint it evaluated, what it trained, and its evaluation."""

    checkpoint: CheckpointRef | None  # None: the base model (no adapter)
    trained: list[int]  # epochs this trial trained ([]: every epoch came from the store)
    epoch_metrics: dict[int, dict[str, float]]  # per epoch, reused ones included
    objective: float
    summary: dict[str, float]  # aggregated metrics (`<name>_std` included); multi-fidelity adds composite_of_means
    eval_dir: Path
    per_line: list[dict[str, Any]]  # one row per (line, seed), without codes
    backends: dict[str, str] = field(default_factory=dict)
    lines_used: int | None = None
    lines_total: int | None = None
    timings: dict[str, float] = field(default_factory=dict)  # setup_s, train_s, eval_s
    phases: dict[str, float] = field(default_factory=dict)  # the worker's phase clock since its last reply

    @classmethod
    def of(cls, train: Any, ev: Any, lines: int | None = None, objective: float | None = None) -> TrialResult:
        """From a `train.loop.TrainResult` (None for the base model) and an `evaluate.scoring.EvalResult`;
        `objective` / `lines` when they differ from the evaluation's own (multi-fidelity)."""
        return cls(
            checkpoint=train.ref if train is not None else None,
            trained=list(train.trained) if train is not None else [],
            epoch_metrics=dict(train.metrics) if train is not None else {},
            objective=ev.objective if objective is None else objective,
            summary=dict(ev.summary),
            eval_dir=Path(ev.dir),
            per_line=[{k: v for k, v in row.items() if k != "codes"} for row in ev.per_line],
            backends=dict(ev.backends),
            lines_used=lines,
            lines_total=lines,
        )

    @property
    def training_key(self) -> str | None:
        return self.checkpoint.key if self.checkpoint is not None else None

    @property
    def checkpoint_path(self) -> str | None:
        """The checkpoint folder as text (user attribute, MLflow param and tag)."""
        return _text(self.checkpoint)

    @property
    def reused(self) -> bool:
        """The trial trained nothing: its checkpoint was already stored."""
        return not self.trained

    def user_attrs(self) -> dict[str, Any]:
        """The trial's user attributes (JSON): what `StoredTrial.of` reads back."""
        return {
            "training_key": self.training_key or "",
            "checkpoint": self.checkpoint_path or "",
            "eval_dir": str(self.eval_dir),
            "trained_epochs": list(self.trained),
            "epoch_reached": max(self.epoch_metrics, default=0),
            "timings": dict(self.timings),
            "constraints": constraint_values(self.summary),
            "reused": self.reused,
            "summary": {k: v for k, v in self.summary.items() if not k.endswith("_std")},
            "lines_used": self.lines_used,
            "lines_total": self.lines_total,
        }


def constraint_values(summary: dict[str, float]) -> list[float]:
    """Optuna constraint values (<= 0 feasible) in a stable order, from the `constraint_*` summary keys."""
    return [v for k, v in sorted(summary.items()) if k.startswith("constraint_")]


@dataclass(frozen=True)
class StoredTrial:
    """A finished (or running) trial's record in Optuna, typed. Missing attributes read as None / empty: a pruned,
    failed or still running trial has only some of them."""

    number: int
    checkpoint: CheckpointRef | None
    training_key: str | None
    eval_dir: Path | None
    summary: dict[str, float]
    reused: bool | None
    trained_epochs: list[int]
    epoch_reached: int
    constraints: list[float]
    timings: dict[str, float]
    lines_used: int | None
    lines_total: int | None
    fail_reason: str | None
    mlflow_run_id: str | None

    @classmethod
    def of(cls, trial: Any) -> StoredTrial:
        a = trial.user_attrs
        return cls(
            number=trial.number,
            checkpoint=_ref(a.get("checkpoint")),
            training_key=a.get("training_key") or None,
            eval_dir=Path(a["eval_dir"]) if a.get("eval_dir") else None,
            summary=dict(a.get("summary") or {}),
            reused=a.get("reused"),
            trained_epochs=[int(e) for e in a.get("trained_epochs") or []],
            epoch_reached=int(a.get("epoch_reached") or 0),
            constraints=[float(v) for v in a.get("constraints") or []],
            timings=dict(a.get("timings") or {}),
            lines_used=a.get("lines_used"),
            lines_total=a.get("lines_total"),
            fail_reason=a.get("fail_reason"),
            mlflow_run_id=a.get("mlflow_run_id"),
        )

    @property
    def checkpoint_path(self) -> str | None:
        """The checkpoint folder as text (tables, tags, the (checkpoint, scale) pair of a trial)."""
        return _text(self.checkpoint)

    @property
    def result_file(self) -> Path | None:
        """The evaluation's result.json when it still exists (a cleaned runs/ folder loses it)."""
        path = self.eval_dir / "result.json" if self.eval_dir is not None else None
        return path if path is not None and path.is_file() else None


def _text(ref: CheckpointRef | None) -> str | None:
    return str(ref.path) if ref is not None else None


def _ref(value: Any) -> CheckpointRef | None:
    if not value:
        return None
    try:
        return CheckpointRef.from_path(value)
    except ValueError:
        return None
