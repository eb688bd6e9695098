"""Running one trial: ask, build the trial's config (the base config with the sampled leaves applied), send it to
the worker, relay each epoch's validation loss (or each chunk of lines) to the pruner, record the result, tell.

Owns: one trial's course and every way it ends (complete, pruned, failed, worker died, interrupted, lost to
another driver), the epoch relay. Does not own: the study and the budget (session.py), the worker process and its
messages (protocol.py, worker.py), what a trial leaves behind (record.py, result.py), the re-queue policy
(recovery.py), multi-fidelity (fidelity.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep import phases, record
from qtts_sweep.sweep.fidelity import LineRelay
from qtts_sweep.sweep.heartbeat import TrialHeartbeat
from qtts_sweep.sweep.protocol import TrialRequest, WorkerHandle, crash_plan, death_reason
from qtts_sweep.sweep.recovery import enqueue_point, not_the_trials_fault, requeue_once, tag_trial
from qtts_sweep.sweep.result import TrialResult
from qtts_sweep.sweep.session import StudySession, grid_exhausted
from qtts_sweep.sweep.spec import SweepSpec, apply_params, overrides_for, suggest
from qtts_sweep.util.problems import ValidationError


def key_material(cfg: Config, key: str) -> dict:
    """The key material the worker stored beside the checkpoints (no data check needed in the driver)."""
    from qtts_sweep.train.store import CheckpointStore

    return CheckpointStore(cfg.paths.store_dir).read_material(key)


class TrialRunner:
    """Runs trials one at a time on one session's study through one worker; `run_one()` returns the trial's
    number."""

    def __init__(
        self,
        spec: SweepSpec,
        cfg0: Config,
        session: StudySession,
        worker: WorkerHandle,
        clock: phases.PhaseClock,
        log: Callable[[str], None],
        progress: Any,
    ):
        self.spec, self.cfg0, self.session, self.worker = spec, cfg0, session, worker
        self.phases, self.log, self.progress = clock, log, progress
        self._crash = crash_plan()

    def run_one(self) -> int:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        study, tracker, parent = self.session.study, self.session.tracker, self.session.parent
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
                return self._fail(trial, run_id, "invalid trial config", str(exc))
            self.progress.trial_started(trial.number, cfg.eval.epoch)
            request = TrialRequest(trial.number, cfg, self._crash.get(trial.number), fidelity=self.spec.fidelity)
            self.worker.submit(request)
            return self._follow(trial, run_id, cfg)
        except UpdateFinishedTrialError:
            return self._lost(trial, run_id, None)
        except KeyboardInterrupt:
            record.record_interrupted(trial, tracker, run_id)
            self._tell(trial, state=TrialState.FAIL)
            if trial.params:
                enqueue_point(study, trial.params, retry_of=trial.number)
            self.worker.stop()
            raise
        finally:
            heartbeat.stop()

    def _follow(self, trial, run_id, cfg: Config) -> int:
        """Relay the worker's messages for one trial until it ends; record and tell the outcome."""
        from optuna.trial import TrialState

        tracker = self.session.tracker
        # per-line pruning (fidelity.py) owns the trial's intermediate values: epochs are then not reported
        relay = EpochRelay(trial, tracker, cfg, prunable=not self.spec.multi and self.spec.fidelity is None)
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
                        self._tell(trial, self._values(result))
                except UpdateFinishedTrialError:
                    return self._lost(trial, run_id, result)
                how = "reused checkpoint" if result.reused else f"trained {result.trained}"
                self.log(f"trial {trial.number}: objective {result.objective:.4f} ({how})")
                return trial.number
            elif kind == "pruned":
                record.record_training(trial, relay.key, relay.trained, max(relay.steps, default=0))
                self._tell(trial, state=TrialState.PRUNED)
                record.record_pruned(tracker, run_id, msg[1], relay.steps)
                after = f" after {msg[2]} lines" if len(msg) > 2 else ""
                self.log(f"trial {trial.number}: pruned at epoch {msg[1]}{after}")
                return trial.number
            elif kind in ("failed", "died"):
                return self._failed(trial, run_id, relay, msg)

    def _failed(self, trial, run_id, relay: EpochRelay, msg: tuple) -> int:
        """A trial that raised ("failed", kind, message) or whose worker died ("died", exitcode): recorded as
        failed; re-queued once when it was not the trial's own fault (recovery.not_the_trials_fault)."""
        record.record_training(trial, relay.key, relay.trained, max(relay.steps, default=0))
        if msg[0] == "failed":
            kind, message, exitcode = msg[1], msg[2], None
        else:
            kind, message, exitcode = "WorkerDied", death_reason(msg[1]), msg[1]
        number = self._fail(trial, run_id, kind, message, relay.steps)
        if not_the_trials_fault(kind, exitcode) and requeue_once(self.session.study, trial):
            self.log(f"trial {trial.number}: re-queued once (not the trial's own failure)")
        return number

    def _lost(self, trial, run_id: str | None, result: TrialResult | None) -> int:
        """Another driver failed this trial while it ran here (it judged it stale, e.g. after a database outage
        longer than the grace period) and re-queued it. Nothing more can be written to the finished trial: what
        this driver has goes to the trial's MLflow run and the log, and the sweep goes on (the retry reuses the
        checkpoint and the cached evaluation, so it costs little)."""
        got = f"objective {result.objective:.4f}" if result is not None else "no result yet"
        reason = f"failed by another driver while running here ({got}); re-queued there"
        tags = {"fail_reason": reason}
        if result is not None:
            tags["objective_unrecorded"] = f"{result.objective:.6f}"
        self.session.tracker.finish_trial(run_id, "FAILED", tags=tags)
        self.log(f"trial {trial.number}: {reason}")
        return trial.number

    def _tell(self, trial, values=None, state=None) -> None:
        """`study.tell`, where the grid sampler's end of grid stops this driver's loop.

        Optuna gap: `GridSampler.after_trial` calls `study.stop()` once every grid point was asked, and `stop()`
        raises RuntimeError outside `optimize()`. The trial is stored before that (Optuna's `_tell` stores it in a
        `finally`), so when the public `GridSampler.is_exhausted(study)` agrees, the error only means: the grid is
        done.
        """
        from optuna.exceptions import UpdateFinishedTrialError

        study = self.session.study
        try:
            study.tell(trial, values, state=state)
        except RuntimeError as exc:
            if isinstance(exc, UpdateFinishedTrialError) or not grid_exhausted(study):
                raise
            self.session.stopped = self.session.stopped or "every grid point has been run"

    def _values(self, result: TrialResult) -> float | list[float]:
        if not self.spec.multi:
            return float(result.objective)
        from qtts_sweep.metrics.objective import objective_vector

        return objective_vector(result.summary, self.spec.objectives)

    def _fail(self, trial, run_id, kind: str, message: str, steps: dict | None = None) -> int:
        from optuna.trial import TrialState

        reason = record.record_failure(trial, self.session.tracker, run_id, kind, message, steps)
        self._tell(trial, state=TrialState.FAIL)
        self.log(f"trial {trial.number}: FAILED ({reason})")
        return trial.number


class EpochRelay:
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
