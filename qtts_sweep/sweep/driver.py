"""The trial loop: Optuna ask/tell over a persistent trial worker, until the budget is spent.

One trial at a time: ask (after every earlier tell), run it on the worker, record, tell (trials.py), until the
study's budget is spent (session.py). Re-running the same command resumes the study (recovery.py): stale RUNNING
trials are failed and re-queued, enqueued baselines are skipped if they exist, numbering continues, and
`n_trials` is a total.

Owns: putting the three parts together for one driver's life — the study session (session.py), the trial runner
(trials.py), the worker process (protocol.py) — and what the driver reports (`SweepOutcome`). Does not own: any
step of the loop (those modules), the pipe protocol and worker life cycle (protocol.py), what a trial computes
(worker.py), storage and heartbeats (storage.py, heartbeat.py), user attributes and MLflow payloads (record.py),
the base model's audio for the listening page (report.py asks this driver's worker for it). The timing of its
phases (storage, MLflow, waiting for the worker's start) is a clock's (phases.py) around these calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep import phases
from qtts_sweep.sweep.progress import NullProgress
from qtts_sweep.sweep.protocol import WorkerHandle
from qtts_sweep.sweep.recovery import budget_used
from qtts_sweep.sweep.selection import best_summary
from qtts_sweep.sweep.session import StudySession
from qtts_sweep.sweep.spec import SweepSpec
from qtts_sweep.sweep.storage import default_storage
from qtts_sweep.sweep.trials import TrialRunner
from qtts_sweep.sweep.worker import worker_main


@dataclass
class SweepOutcome:
    study_name: str
    storage: str
    completed: int
    pruned: int
    failed: int
    best: dict[str, Any] | None
    stopped_reason: str | None = None
    base_eval_dir: str | None = None
    base_eval_s: float = 0.0
    parent_run_id: str | None = None
    trials_run: list[int] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of this driver (phases.py)
    wall_s: float = 0.0  # this driver's run() wall time


class SweepDriver:
    """Runs one study to its budget: a `StudySession`, a `TrialRunner` and one worker for the driver's life.

    `compose(overrides) -> Config` builds and validates the base config (Hydra) unless the launcher passes the one it
    composed (`cfg0`); each trial's config is the base with the sampled leaves applied (`spec.apply_params`).
    """

    def __init__(
        self,
        spec: SweepSpec,
        compose: Callable[[list[str]], Config],
        base_overrides: list[str],
        log: Callable[[str], None] = print,
        threads: int | None = None,
        progress: NullProgress | None = None,
        cfg0: Config | None = None,
    ):
        self.spec = spec
        self.base = [*spec.base, *base_overrides]
        self.log = log
        self.progress = progress or NullProgress()
        # `cfg0`: the config the launcher already composed from exactly these overrides (composed once per sweep)
        self.cfg0 = cfg0 if cfg0 is not None else compose(self.base)
        Path(self.cfg0.paths.runs_dir).mkdir(parents=True, exist_ok=True)  # SQLite stores live there
        self.storage_url = spec.storage or default_storage(self.cfg0.paths.runs_dir)
        self.worker = WorkerHandle(worker_main, threads)
        self.phases = phases.PhaseClock()
        self.session = StudySession(spec, self.cfg0, self.storage_url, self.base, self.phases, log)
        self.runner = TrialRunner(spec, self.cfg0, self.session, self.worker, self.phases, log, self.progress)
        self._trials_run: list[int] = []
        self._base_eval_result: tuple[str | None, float] = (None, 0.0)
        self._opened = False
        self._wall = 0.0

    def prepare(self) -> str | None:
        """Once per launch, before any driver asks (StudySession.prepare); returns the parent run id."""
        return self.session.prepare()

    def run(self, join: bool = False) -> SweepOutcome:
        """Run trials until the study's budget is spent. `join=True`: the study was prepared by the launcher
        (several drivers share it); otherwise this driver prepares it first."""
        from qtts_sweep.sweep.report import base_model_audio

        t0 = time.perf_counter()
        try:  # the worker stops however this ends: a signal may arrive at any line (tests/test_worker_lifecycle.py)
            self.worker.warm(self.cfg0)  # imports and model load overlap the study set-up below
            if not join:
                self.prepare()
            self.session.open(self.progress)
            self._opened = True
            while not self.session.budget_spent():
                self._trials_run.append(self.runner.run_one())
                self.progress.trial_finished(self._trials_run[-1])
            if not join:  # several drivers: the launcher's report does without base-model audio
                self._base_eval_result = base_model_audio(self.worker, self.cfg0, self.phases, self.log)
        finally:
            self.worker.stop()
        if not join:
            self.session.tracker.finish_parent(self.session.parent)
        self.phases.merge(phases.warm_up(self.worker.warm_wait, self.worker.warm_phases))
        self._wall = time.perf_counter() - t0
        self.session.record_phases(self._wall)
        return self.outcome()

    def outcome(self, stopped_reason: str | None = None) -> SweepOutcome:
        """What this driver did, and the study's budget and best trial as they stand now."""
        out = SweepOutcome(self.spec.study_name, self.storage_url, 0, 0, 0, None, parent_run_id=self.session.parent)
        out.trials_run = list(self._trials_run)
        out.stopped_reason = stopped_reason or self.session.stopped
        out.base_eval_dir, out.base_eval_s = self._base_eval_result
        out.phases, out.wall_s = self.phases.as_dict(), self._wall
        if self._opened:
            out.completed, out.pruned, out.failed = budget_used(self.session.study)
            out.best = best_summary(self.session.study)
        return out
