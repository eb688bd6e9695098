"""The trial loop: Optuna ask/tell over a persistent trial worker, until the budget is spent.

One trial at a time: ask (after every earlier tell), build the trial's config (the base config with the sampled
leaves applied), send it to the worker, relay each epoch's validation loss to the pruner, record the result, tell.
Re-running the same command resumes the study (recovery.py): stale RUNNING trials are failed and re-queued,
enqueued baselines are skipped if they exist, numbering continues, and `n_trials` is a total.

Owns: the loop, the failure-rate cap, the order of calls. Does not own: the pipe protocol and worker life cycle
(protocol.py), what a trial computes (worker.py), storage and heartbeats (storage.py), stale trials and the budget
(recovery.py), user attributes and MLflow payloads (record.py), MLflow itself (qtts_sweep.tracking). The timing
of its phases (storage, MLflow, waiting for the worker's start) is a clock's (phases.py) around these calls.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep import phases, record
from qtts_sweep.sweep.fidelity import LineRelay
from qtts_sweep.sweep.heartbeat import TrialHeartbeat
from qtts_sweep.sweep.progress import NullProgress
from qtts_sweep.sweep.protocol import TrialRequest, WorkerHandle, crash_plan, death_reason
from qtts_sweep.sweep.recovery import (
    budget_used,
    enqueue_point,
    not_the_trials_fault,
    recover_stale,
    register_driver,
    requeue_once,
    tag_trial,
)
from qtts_sweep.sweep.result import TrialResult
from qtts_sweep.sweep.search import open_study
from qtts_sweep.sweep.selection import OBJECTIVE_ATTR, best_summary
from qtts_sweep.sweep.spec import SweepSpec, apply_params, overrides_for, suggest
from qtts_sweep.sweep.storage import default_storage, make_storage
from qtts_sweep.sweep.warm_start import enqueue_warm_start
from qtts_sweep.sweep.worker import worker_main
from qtts_sweep.util.problems import ValidationError
from qtts_sweep.util.urls import redact


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


def key_material(cfg: Config, key: str) -> dict:
    """The key material the worker stored beside the checkpoints (no data check needed in the driver)."""
    from qtts_sweep.train.store import CheckpointStore

    return CheckpointStore(cfg.paths.store_dir).read_material(key)


class SweepDriver:
    """Runs one study to its budget.

    Longer than most classes here (~200 lines) because the loop's steps share one worker, one study and one
    tracker for the driver's whole life; each method is one step (prepare, run, budget check, one trial, relay,
    fail), and everything that is not the loop lives in its own module (see the module docstring).

    `compose(overrides) -> Config` builds and validates the base config (Hydra) unless the launcher passes the one it
    composed (`cfg0`); each trial's config is the base with the sampled leaves applied (`apply_params`).
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
        self._crash = crash_plan()
        self._trials_run: list[int] = []
        self._study = None
        self._study_storage = None
        self._parent: str | None = None
        self._stopped: str | None = None  # why the loop stopped early (failure cap)
        self._base_eval_result: tuple[str | None, float] = (None, 0.0)
        self.phases = phases.PhaseClock()
        self._wall = 0.0

    def _open(self):
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
        _, study, tracker = self._open()
        with self.phases("storage"):  # tracker calls inside count as MLflow (exclusive phases)
            return self._prepare(study, tracker)

    def _prepare(self, study, tracker) -> str | None:
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
            "base_overrides": redact(" ".join(self.base)),
        }
        parent = tracker.study_parent(self.spec.study_name, description)
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        tracker.fail_orphans(self.spec.study_name, keep={t.user_attrs.get("mlflow_run_id") for t in running} - {None})
        return parent

    def run(self, join: bool = False) -> SweepOutcome:
        """Run trials until the study's budget is spent. `join=True`: the study was prepared by the launcher
        (several drivers share it); otherwise this driver prepares it first."""
        t0 = time.perf_counter()
        self.worker.warm(self.cfg0)  # imports and model load overlap the study set-up below
        if not join:
            self.prepare()
        storage, study, tracker = self._open()
        self._study, self._study_storage = study, storage
        with self.phases("storage"):
            self.progress.attach(study)
            register_driver(study)
        parent = self._parent = tracker.study_parent(self.spec.study_name, {})
        try:
            while not self._budget_spent(study, tracker):
                self._trials_run.append(self._one_trial(study, storage, tracker, parent))
                self.progress.trial_finished(self._trials_run[-1])
            if not join:  # several drivers: the launcher's report does without base-model audio
                self._base_eval_result = self._base_eval()
        finally:
            self.worker.stop()
        if not join:
            tracker.finish_parent(parent)
        self.phases.merge(phases.warm_up(self.worker.warm_wait, self.worker.warm_phases))
        self._wall = time.perf_counter() - t0
        try:
            with self.phases("storage"):
                phases.record(study, self.phases, self._wall)
        except Exception:  # noqa: S110 - benchmark accounting must never fail a finished sweep
            pass
        return self.outcome()

    def outcome(self, stopped_reason: str | None = None) -> SweepOutcome:
        """What this driver did, and the study's budget and best trial as they stand now."""
        out = SweepOutcome(self.spec.study_name, self.storage_url, 0, 0, 0, None, parent_run_id=self._parent)
        out.trials_run = list(self._trials_run)
        out.stopped_reason = stopped_reason or self._stopped
        out.base_eval_dir, out.base_eval_s = self._base_eval_result
        out.phases, out.wall_s = self.phases.as_dict(), self._wall
        if self._study is not None:
            out.completed, out.pruned, out.failed = budget_used(self._study)
            out.best = best_summary(self._study)
        return out

    def _budget_spent(self, study, tracker) -> bool:
        """True when n_trials are done or running elsewhere, or (noting why) when too many failed.

        Trials other drivers are running count: with N drivers the budget overshoots by at most N-1 (drivers that
        check at the same moment). Stale trials of dead drivers are failed and re-queued first.
        """
        with self.phases("storage"):
            return self._budget_spent_timed(study, tracker)

    def _budget_spent_timed(self, study, tracker) -> bool:
        from optuna.trial import TrialState

        recover_stale(study, tracker, self._study_storage)
        if self._stopped:
            return True
        if _grid_exhausted(study):
            self._stopped = "every grid point has been run"
            return True
        done = budget_used(study)
        total = sum(done)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if total + running >= self.spec.n_trials:
            return True
        if total >= self.spec.min_trials_for_failure_cap and done[2] / total > self.spec.max_failure_rate:
            self._stopped = (
                f"stopping the sweep: {done[2]} of {total} trials failed (> max_failure_rate "
                f"{self.spec.max_failure_rate:.0%}). Look at the fail_reason of the failed trials "
                "(`qtts-sweep report`), fix the cause, then re-run the same command to resume."
            )
            self.log(self._stopped)
            return True
        return False

    def _base_eval(self) -> tuple[str | None, float]:
        """Base-model audio of the val lines for the listening page (cached like any evaluation)."""
        try:
            self.worker.submit(TrialRequest(-1, self.cfg0, base=True))
            msg = self.worker.recv()
        except (OSError, EOFError):
            return None, 0.0
        if msg[0] != "done":
            self.log(f"base-model reference audio not available: {msg[1:]}")
            return None, 0.0
        self.phases.merge(msg[1].get("phases", {}))
        return msg[1]["eval_dir"], msg[1]["timings"]["eval_s"]

    def _one_trial(self, study, storage, tracker, parent: str | None) -> int:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        with self.phases("storage"):
            trial = study.ask()
            tag_trial(trial)
            heartbeat = TrialHeartbeat(trial)
        run_id = None
        try:
            with self.phases("storage"):
                params = suggest(trial, self.spec)
                run_id = tracker.start_trial(parent, self.spec.study_name, trial.number, params)
                if run_id:
                    trial.set_user_attr("mlflow_run_id", run_id)
            self.log(f"trial {trial.number}: {overrides_for(params)}")
            try:
                cfg = apply_params(self.cfg0, params)
            except ValidationError as exc:
                return self._fail(study, trial, tracker, run_id, "invalid trial config", str(exc))
            self.progress.trial_started(trial.number, cfg.eval.epoch)
            request = TrialRequest(trial.number, cfg, self._crash.get(trial.number), fidelity=self.spec.fidelity)
            self.worker.submit(request)
            return self._follow(study, trial, tracker, run_id, cfg)
        except UpdateFinishedTrialError:
            return self._lost(trial, tracker, run_id, None)
        except KeyboardInterrupt:
            record.record_interrupted(trial, tracker, run_id)
            self._tell(study, trial, state=TrialState.FAIL)
            if trial.params:
                enqueue_point(study, trial.params, retry_of=trial.number)
            self.worker.stop()
            raise
        finally:
            heartbeat.stop()

    def _follow(self, study, trial, tracker, run_id, cfg: Config) -> int:
        """Relay the worker's messages for one trial until it ends; record and tell the outcome."""
        from optuna.trial import TrialState

        # per-line pruning (fidelity.py) owns the trial's intermediate values: epochs are then not reported
        relay = _EpochRelay(trial, tracker, cfg, prunable=not self.spec.multi and self.spec.fidelity is None)
        lines = LineRelay(trial)
        while True:
            msg = self.worker.recv()
            kind = msg[0]
            self.progress.message(msg)
            if kind == "epoch":
                with self.phases("storage"):
                    prune = relay.epoch(*msg[1:])
                self.worker.send(("prune", prune))
            elif kind == "lines":
                with self.phases("storage"):
                    prune = lines.lines(*msg[1:])
                self.worker.send(("prune", prune))
            elif kind == "done":
                from optuna.exceptions import UpdateFinishedTrialError

                result: TrialResult = msg[1]
                self.phases.merge(result.phases)
                try:
                    with self.phases("storage"):
                        record.record_complete(
                            trial, result, tracker, run_id, relay.training_run, relay.steps, self.cfg0.paths.runs_dir
                        )
                        self._tell(study, trial, self._values(result))
                except UpdateFinishedTrialError:
                    return self._lost(trial, tracker, run_id, result)
                how = "reused checkpoint" if result.reused else f"trained {result.trained}"
                self.log(f"trial {trial.number}: objective {result.objective:.4f} ({how})")
                return trial.number
            elif kind == "pruned":
                record.record_training(trial, relay.key, relay.trained, max(relay.steps, default=0))
                self._tell(study, trial, state=TrialState.PRUNED)
                record.record_pruned(tracker, run_id, msg[1], relay.steps)
                after = f" after {msg[2]} lines" if len(msg) > 2 else ""
                self.log(f"trial {trial.number}: pruned at epoch {msg[1]}{after}")
                return trial.number
            elif kind in ("failed", "died"):
                return self._failed(study, trial, tracker, run_id, relay, msg)

    def _failed(self, study, trial, tracker, run_id, relay: _EpochRelay, msg: tuple) -> int:
        """A trial that raised ("failed", kind, message) or whose worker died ("died", exitcode): recorded as
        failed; re-queued once when it was not the trial's own fault (recovery.not_the_trials_fault)."""
        record.record_training(trial, relay.key, relay.trained, max(relay.steps, default=0))
        if msg[0] == "failed":
            kind, message, exitcode = msg[1], msg[2], None
        else:
            kind, message, exitcode = "WorkerDied", death_reason(msg[1]), msg[1]
        number = self._fail(study, trial, tracker, run_id, kind, message, relay.steps)
        if not_the_trials_fault(kind, exitcode) and requeue_once(study, trial):
            self.log(f"trial {trial.number}: re-queued once (not the trial's own failure)")
        return number

    def _lost(self, trial, tracker, run_id: str | None, result: TrialResult | None) -> int:
        """Another driver failed this trial while it ran here (it judged it stale, e.g. after a database outage
        longer than the grace period) and re-queued it. Nothing more can be written to the finished trial: what
        this driver has goes to the trial's MLflow run and the log, and the sweep goes on (the retry reuses the
        checkpoint and the cached evaluation, so it costs little)."""
        got = f"objective {result.objective:.4f}" if result is not None else "no result yet"
        reason = f"failed by another driver while running here ({got}); re-queued there"
        tags = {"fail_reason": reason}
        if result is not None:
            tags["objective_unrecorded"] = f"{result.objective:.6f}"
        tracker.finish_trial(run_id, "FAILED", tags=tags)
        self.log(f"trial {trial.number}: {reason}")
        return trial.number

    def _tell(self, study, trial, values=None, state=None) -> None:
        """`study.tell`, where the grid sampler's end of grid stops this driver's loop.

        Optuna gap: `GridSampler.after_trial` calls `study.stop()` once every grid point was asked, and `stop()`
        raises RuntimeError outside `optimize()`. The trial is stored before that (Optuna's `_tell` stores it in a
        `finally`), so when the public `GridSampler.is_exhausted(study)` agrees, the error only means: the grid is
        done.
        """
        try:
            study.tell(trial, values, state=state)
        except RuntimeError as exc:
            if isinstance(exc, _update_finished_error()) or not _grid_exhausted(study):
                raise
            self._stopped = self._stopped or "every grid point has been run"

    def _values(self, result: TrialResult) -> float | list[float]:
        if not self.spec.multi:
            return float(result.objective)
        from qtts_sweep.metrics.objective import objective_vector

        return objective_vector(result.summary, self.spec.objectives)

    def _fail(self, study, trial, tracker, run_id, kind: str, message: str, steps: dict | None = None) -> int:
        from optuna.trial import TrialState

        reason = record.record_failure(trial, tracker, run_id, kind, message, steps)
        self._tell(study, trial, state=TrialState.FAIL)
        self.log(f"trial {trial.number}: FAILED ({reason})")
        return trial.number


def _update_finished_error():
    from optuna.exceptions import UpdateFinishedTrialError

    return UpdateFinishedTrialError


def _grid_exhausted(study) -> bool:
    """Every grid point has been asked and no re-queued point waits (a retry carries a point already visited)."""
    import optuna
    from optuna.trial import TrialState

    if not isinstance(study.sampler, optuna.samplers.GridSampler) or not study.sampler.is_exhausted(study):
        return False
    return not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


class _EpochRelay:
    """Per trial: log each newly trained epoch to its training run, report validation loss to the pruner."""

    def __init__(self, trial, tracker, cfg: Config, prunable: bool):
        self.trial, self.tracker, self.cfg, self.prunable = trial, tracker, cfg, prunable
        self.training_run: str | None = None
        self.steps: dict[int, dict] = {}
        self.key: str | None = None
        self.trained: list[int] = []

    def epoch(self, epoch: int, metrics: dict, reused: bool, key: str) -> bool:
        """Record one epoch; return whether the pruner says stop."""
        self.steps[epoch] = metrics
        self.key = key
        if not reused:
            self.trained.append(epoch)
        if self.training_run is None and self.tracker.enabled:
            self.training_run = self.tracker.training_run(key, key_material(self.cfg, key))
        if not reused:
            from qtts_sweep.train.store import CheckpointStore

            adapter = CheckpointStore(self.cfg.paths.store_dir).adapter_file(key, epoch)
            self.tracker.log_training_epoch(self.training_run, epoch, metrics, adapter)
        value = metrics.get("val_loss")
        if not self.prunable or value is None or not math.isfinite(value):
            return False
        from optuna.exceptions import UpdateFinishedTrialError

        # Pruners read intermediate values in the study's direction: maximize -> report -loss.
        try:
            self.trial.report(-value, epoch)
            prune = self.trial.should_prune()
            if prune:
                # Optuna makes a pruned trial's last intermediate value its value unless it is NaN: -val_loss
                # (~-10) would then sit on the objective's axis in every dashboard. A NaN step after the last real
                # one keeps the pruned trial valueless; pruners skip NaN (docs/design.md, "Dashboards").
                self.trial.report(float("nan"), epoch + 1)
            return prune
        except UpdateFinishedTrialError:  # failed by another driver meanwhile: stop training (epochs are kept)
            return True
