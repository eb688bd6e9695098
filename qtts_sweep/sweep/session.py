"""A driver's session with its study: storage, the study with its sampler and pruner, the tracker; what happens
once per launch (`prepare`); whether the budget is spent.

Owns: opening the study and the tracker (timed as the driver's storage / MLflow phases), the launch set-up (stale
trials re-queued, baselines and warm-start points enqueued once, the sweep's objective recorded, the parent run
found or created, orphaned MLflow runs failed), the budget and failure-rate checks, and `stopped` (why the loop
ended early). Does not own: running a trial (trials.py), the re-queue policy itself (recovery.py), storage URLs
and retries (storage.py), samplers and pruners (search.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep import phases
from qtts_sweep.sweep.recovery import budget_used, enqueue_point, recover_stale, register_driver
from qtts_sweep.sweep.search import open_study
from qtts_sweep.sweep.selection import OBJECTIVE_ATTR
from qtts_sweep.sweep.spec import SweepSpec
from qtts_sweep.sweep.storage import make_storage
from qtts_sweep.sweep.warm_start import enqueue_warm_start
from qtts_sweep.util.urls import redact


class StudySession:
    """One driver's study, storage and tracker (opened by `open`), and the loop's stop conditions."""

    def __init__(
        self,
        spec: SweepSpec,
        cfg0: Config,
        storage_url: str,
        base_overrides: list[str],
        clock: phases.PhaseClock,
        log: Callable[[str], None],
    ):
        self.spec, self.cfg0, self.storage_url = spec, cfg0, storage_url
        self.base_overrides = base_overrides
        self.phases, self.log = clock, log
        self.storage: Any = None
        self.study: Any = None
        self.tracker: Any = None
        self.parent: str | None = None
        self.stopped: str | None = None  # why the loop stopped early (failure cap, end of grid)

    def _connect(self):
        from qtts_sweep.tracking.mlflow_tracker import make_tracker

        with self.phases("storage"):
            storage = make_storage(self.storage_url)
            study = open_study(self.spec, storage)
        with self.phases("mlflow"):
            tracker = make_tracker(self.cfg0.tracking)
        return storage, study, self.phases.timed(tracker, "mlflow")

    def prepare(self) -> str | None:
        """What happens once per launch, before any driver asks: create the study, fail and re-queue what a
        stopped sweep left RUNNING (and its MLflow runs), enqueue baselines once, find or create the parent run."""
        _, study, tracker = self._connect()
        with self.phases("storage"):  # tracker calls inside count as MLflow (exclusive phases)
            return self._prepare(study, tracker)

    def _prepare(self, study, tracker) -> str | None:
        from optuna.trial import TrialState

        stale = recover_stale(study, tracker)
        if stale:
            self.log(f"re-queued trial(s) {stale} left RUNNING by a stopped sweep")
        for point in self.spec.enqueue:
            enqueue_point(study, point, baseline=True)
        for line in enqueue_warm_start(study, self.spec, self.cfg0.paths.runs_dir, self.storage_url):
            self.log(line)
        # promotion and reports choose with the sweep's own weights and tie-break, not a later command's defaults
        study.set_user_attr(OBJECTIVE_ATTR, dataclasses.asdict(self.cfg0.eval.objective))
        description = {
            "sweep": self.spec.name,
            "storage": redact(self.storage_url),
            "n_trials": self.spec.n_trials,
            "sampler": self.spec.sampler,
            "pruner": self.spec.pruner,
            "base_overrides": redact(" ".join(self.base_overrides)),
        }
        parent = tracker.study_parent(self.spec.study_name, description)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        tracker.fail_orphans(self.spec.study_name, keep={t.user_attrs.get("mlflow_run_id") for t in running} - {None})
        return parent

    def open(self, progress: Any) -> None:
        """Connect for the trial loop: this driver registers itself, the progress line follows the study, and the
        parent run (created by `prepare`) is found."""
        self.storage, self.study, self.tracker = self._connect()
        with self.phases("storage"):
            progress.attach(self.study)
            register_driver(self.study)
        self.parent = self.tracker.study_parent(self.spec.study_name, {})

    def budget_spent(self) -> bool:
        """True when n_trials are done or running elsewhere, or (noting why) when too many failed.

        Trials other drivers are running count: with N drivers the budget overshoots by at most N-1 (drivers that
        check at the same moment). Stale trials of dead drivers are failed and re-queued first.
        """
        with self.phases("storage"):
            return self._budget_spent()

    def _budget_spent(self) -> bool:
        from optuna.trial import TrialState

        study = self.study
        recover_stale(study, self.tracker, self.storage)
        if self.stopped:
            return True
        if grid_exhausted(study):
            self.stopped = "every grid point has been run"
            return True
        done = budget_used(study)
        total = sum(done)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if total + running >= self.spec.n_trials:
            return True
        if total >= self.spec.min_trials_for_failure_cap and done[2] / total > self.spec.max_failure_rate:
            self.stopped = (
                f"stopping the sweep: {done[2]} of {total} trials failed (> max_failure_rate "
                f"{self.spec.max_failure_rate:.0%}). Look at the fail_reason of the failed trials "
                "(`qtts-sweep report`), fix the cause, then re-run the same command to resume."
            )
            self.log(self.stopped)
            return True
        return False

    def record_phases(self, wall: float) -> None:
        """This driver's phase clock on the study (benchmarks read it); never fails a finished sweep."""
        try:
            with self.phases("storage"):
                phases.record(self.study, self.phases, wall)
        except Exception:  # noqa: S110 - benchmark accounting must never fail a finished sweep
            pass


def grid_exhausted(study) -> bool:
    """Every grid point has been asked and no re-queued point waits (a retry carries a point already visited)."""
    import optuna
    from optuna.trial import TrialState

    if not isinstance(study.sampler, optuna.samplers.GridSampler) or not study.sampler.is_exhausted(study):
        return False
    return not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
