"""The sweep driver: Optuna ask/tell over a persistent trial worker, with resume, pruning and crash isolation.

The only module that drives Optuna's study machinery. One trial at a time: ask (after every earlier tell), compose
the trial's config (base overrides + sampled params), send it to the worker, relay each epoch's validation loss
to the pruner, tell the result. Re-running the same command resumes the study: stale RUNNING trials (driver
killed) are failed and re-queued, enqueued baselines are skipped if they exist, numbering continues and the
budget `n_trials` counts finished trials (re-queued ones excepted). Heartbeats are recorded by the driver
itself (Optuna only does that inside `optimize()`).

Not here: what a trial does (worker.py), the sweep file format (sweep_spec.py), MLflow (tracking.py), reports
(report.py).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config, ValidationError
from qtts_sweep.sweep.spec import SweepSpec, apply_params, overrides_for, suggest

HEARTBEAT_S = 5  # trial heartbeat period; a RUNNING trial silent for GRACE_S is stale
GRACE_S = 20
CRASH_ENV = "QTTS_TEST_CRASH"  # test hook: "3:segfault,5:raise" makes those trial numbers fail on purpose


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


def default_storage(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir) / 'optuna.db'}"


def make_storage(url: str):
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:") :]))
    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


def make_sampler(spec: SweepSpec):
    import optuna

    kw = dict(spec.sampler_kwargs)
    if spec.constrained:
        kw["constraints_func"] = trial_constraints
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, **kw)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler_seed)
    if spec.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=spec.sampler_seed, **kw)
    from qtts_sweep.sweep.spec import grid_space

    return optuna.samplers.GridSampler(grid_space(spec), seed=spec.sampler_seed)


def trial_constraints(trial) -> list[float]:
    """Optuna constraints_func: the violations the driver stored (<= 0 feasible); none yet counts as feasible."""
    return list(trial.user_attrs.get("constraints", [0.0]))


def make_pruner(spec: SweepSpec):
    import optuna

    kw = dict(spec.pruner_kwargs)
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**kw),
        "percentile": lambda: optuna.pruners.PercentilePruner(**kw),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**kw),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**kw),
    }[spec.pruner]()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ORPHAN_S = 5.0  # a live driver tags its trial within milliseconds of ask(); an untagged RUNNING trial older is orphaned


def register_driver(study) -> None:
    """Note this driver (host, pid) in the study, so a restart can tell its orphans from a live driver's trials."""
    study.set_user_attr(f"driver:{socket.gethostname()}:{os.getpid()}", time.time())


def _local_drivers(study) -> tuple[bool, bool]:
    """(a dead driver of this host is registered, another live driver of this host is registered)."""
    prefix = f"driver:{socket.gethostname()}:"
    pids = [int(k[len(prefix) :]) for k in study.user_attrs if k.startswith(prefix)]
    others = [p for p in pids if p != os.getpid()]
    return any(not _alive(p) for p in others), any(_alive(p) for p in others)


def recover_stale(study) -> list[int]:
    """Fail trials a dead driver left RUNNING and re-queue their parameters; return their numbers.

    A trial is stale when its recorded driver (host, pid) is this host's and no longer alive; when it was killed
    before it could be tagged (no params yet: failed, nothing to re-queue) and a dead local driver is registered
    or it is older than ORPHAN_S; or when Optuna's heartbeat says so (another host, silent for GRACE_S).
    """
    import datetime

    import optuna
    from optuna.trial import TrialState

    stale = []
    host = socket.gethostname()
    dead_local, live_local = _local_drivers(study)
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("driver_pid")
        if pid is None:
            age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
            dead = (dead_local and not live_local) or age > ORPHAN_S
        else:
            dead = t.user_attrs.get("driver_host") == host and pid != os.getpid() and not _alive(pid)
        if dead:
            study._storage.set_trial_user_attr(t._trial_id, "stale", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            stale.append(t)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    try:
        optuna.storages.fail_stale_trials(study)  # heartbeat-based; returns nothing in Optuna 5
    except (AttributeError, TypeError, ValueError):  # storage without heartbeats (journal)
        pass
    stale += [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running]
    for t in stale:
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return [t.number for t in stale]


def requeued(trials) -> set[int]:
    """Numbers of the trials that were re-queued (a later trial records them in `retry_of`)."""
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


def budget_used(study) -> tuple[int, int, int]:
    """(complete, pruned, failed) finished trials that count toward n_trials.

    Not counted: trials re-queued after an interruption or a dead driver (their retry counts instead), and stale
    trials killed before they had parameters.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = requeued(trials)
    counted = [
        t
        for t in trials
        if t.number not in retried and not t.user_attrs.get("stale") and not t.user_attrs.get("interrupted")
    ]
    return (
        sum(t.state == TrialState.COMPLETE for t in counted),
        sum(t.state == TrialState.PRUNED for t in counted),
        sum(t.state == TrialState.FAIL for t in counted),
    )


class _Heartbeat:
    def __init__(self, storage, trial_id: int):
        self._stop = threading.Event()
        self._thread = None
        if hasattr(storage, "record_heartbeat"):
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(target=self._run, args=(storage, trial_id), daemon=True)
            self._thread.start()

    def _run(self, storage, trial_id: int) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # the trial finished meanwhile
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=HEARTBEAT_S + 1)


class WorkerHandle:
    """A spawned worker process, started on demand and restarted after it dies."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.proc = None
        self.conn = None
        self.starts = 0
        self.warming = False
        self.warm_wait = 0.0  # seconds the driver waited for the worker's start-up (benchmark accounting)

    def ensure(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            return
        from qtts_sweep.sweep.worker import worker_main

        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=worker_main, args=(child,), daemon=True, name="qtts-sweep-worker")
        self.proc.start()
        child.close()
        self.conn = parent
        self.starts += 1

    def send(self, msg: tuple) -> None:
        self.conn.send(msg)

    def settle(self) -> None:
        """Consume the warm-up reply, if one is pending (a dead worker is noticed by the next recv)."""
        if self.warming:
            self.warming = False
            t0 = time.perf_counter()
            self.recv()
            self.warm_wait += time.perf_counter() - t0

    def recv(self) -> tuple:
        """Next message; ("died", exitcode) when the worker process is gone."""
        while True:
            if self.conn.poll(0.2):
                try:
                    return self.conn.recv()
                except (EOFError, ConnectionResetError):
                    pass
            if not self.proc.is_alive():
                self.proc.join()
                self.warming = False
                return ("died", self.proc.exitcode)

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(("stop",))
                self.proc.join(timeout=10)
            except (BrokenPipeError, OSError):
                pass
            if self.proc.is_alive():
                self.proc.kill()
        self.proc = None


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker process died with {name}{hint}"
    return f"worker process exited with code {exitcode}"


def _crash_plan() -> dict[int, str]:
    plan = {}
    for item in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        number, kind = item.split(":")
        plan[int(number)] = kind
    return plan


class SweepDriver:
    """Runs one study to its budget.

    `compose(overrides) -> Config` builds and validates the base config once (Hydra); each trial's config is the
    base with the sampled leaves applied (`apply_params`).
    """

    def __init__(
        self,
        spec: SweepSpec,
        compose: Callable[[list[str]], Config],
        base_overrides: list[str],
        log: Callable[[str], None] = print,
    ):
        self.spec = spec
        self.compose = compose
        self.base = [*spec.base, *base_overrides]
        self.log = log
        self.cfg0 = compose(self.base)
        Path(self.cfg0.paths.runs_dir).mkdir(parents=True, exist_ok=True)  # SQLite stores live there
        self.storage_url = spec.storage or default_storage(self.cfg0.paths.runs_dir)
        self.worker = WorkerHandle()

    def open_study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = make_storage(self.storage_url)
        directions = self.spec.directions if self.spec.multi else ["maximize"]
        return optuna.create_study(
            study_name=self.spec.study_name,
            storage=storage,
            sampler=make_sampler(self.spec),
            pruner=make_pruner(self.spec),
            directions=directions,
            load_if_exists=True,
        )

    def run(self) -> SweepOutcome:
        from qtts_sweep.sweep.worker import TrialRequest
        from qtts_sweep.tracking.mlflow_tracker import make_tracker

        # Start the worker now: its imports and model load overlap the study setup below.
        self.worker.ensure()
        self.worker.send(("warm", TrialRequest(-2, self.cfg0)))
        self.worker.warming = True
        study = self.open_study()
        tracker = make_tracker(self.cfg0.tracking)
        stale = recover_stale(study)
        register_driver(study)
        if stale:
            self.log(f"re-queued trial(s) {stale} left RUNNING by a stopped sweep")
        for point in self.spec.enqueue:
            study.enqueue_trial(point, skip_if_exists=True)
        parent = tracker.study_parent(
            self.spec.study_name,
            {
                "sweep": self.spec.name,
                "storage": _redact(self.storage_url),
                "n_trials": self.spec.n_trials,
                "sampler": self.spec.sampler,
                "pruner": self.spec.pruner,
                "base_overrides": " ".join(self.base),
            },
        )
        running_ids = {
            t.user_attrs.get("mlflow_run_id") for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
        }
        tracker.fail_orphans(self.spec.study_name, keep={r for r in running_ids if r})
        outcome = SweepOutcome(self.spec.study_name, self.storage_url, 0, 0, 0, None, parent_run_id=parent)
        crash = _crash_plan()
        try:
            while True:
                done = budget_used(study)
                if sum(done) >= self.spec.n_trials:
                    break
                reason = self._failure_cap(done)
                if reason:
                    outcome.stopped_reason = reason
                    self.log(reason)
                    break
                number = self._one_trial(study, tracker, parent, crash)
                outcome.trials_run.append(number)
            outcome.base_eval_dir, outcome.base_eval_s = self._base_eval()
        finally:
            self.worker.stop()
        outcome.completed, outcome.pruned, outcome.failed = budget_used(study)
        tracker.finish_parent(parent)
        outcome.best = best_trial_summary(study, self.spec)
        return outcome

    def _base_eval(self) -> tuple[str | None, float]:
        """Base-model audio of the val lines for the listening page (cached like any evaluation)."""
        from qtts_sweep.sweep.worker import TrialRequest

        try:
            self.worker.ensure()
            self.worker.send(("trial", TrialRequest(-1, self.cfg0, base=True)))
            msg = self.worker.recv()
        except (OSError, EOFError):
            return None, 0.0
        if msg[0] != "done":
            self.log(f"base-model reference audio not available: {msg[1:]}")
            return None, 0.0
        return msg[1]["eval_dir"], msg[1]["timings"]["eval_s"]

    def _failure_cap(self, done: tuple[int, int, int]) -> str | None:
        total = sum(done)
        if total >= self.spec.min_trials_for_failure_cap and done[2] / total > self.spec.max_failure_rate:
            return (
                f"stopping the sweep: {done[2]} of {total} trials failed (> max_failure_rate "
                f"{self.spec.max_failure_rate:.0%}). Look at the fail_reason of the failed trials "
                "(`qtts-sweep report`), fix the cause, then re-run the same command to resume."
            )
        return None

    def _one_trial(self, study, tracker, parent: str | None, crash: dict[int, str]) -> int:
        from optuna.trial import TrialState

        from qtts_sweep.sweep.worker import TrialRequest

        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "driver_host", socket.gethostname())
        study._storage.set_trial_user_attr(trial._trial_id, "driver_pid", os.getpid())
        heartbeat = _Heartbeat(study._storage, trial._trial_id)
        run_id = None
        try:
            params = suggest(trial, self.spec)
            run_id = tracker.start_trial(parent, self.spec.study_name, trial.number, params)
            if run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
            self.log(f"trial {trial.number}: {overrides_for(params)}")
            try:
                cfg = apply_params(self.cfg0, params)
            except ValidationError as exc:
                return self._fail(study, trial, tracker, run_id, "invalid trial config", str(exc))
            self.worker.ensure()
            self.worker.settle()
            self.worker.send(("trial", TrialRequest(trial.number, cfg, crash.get(trial.number))))
            return self._follow(study, trial, tracker, run_id, params, cfg)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            tracker.finish_trial(run_id, "KILLED", tags={"fail_reason": "interrupted (Ctrl-C); re-queued"})
            self.worker.stop()
            raise
        finally:
            heartbeat.stop()

    def _follow(self, study, trial, tracker, run_id, params, cfg: Config) -> int:
        from optuna.trial import TrialState

        training_run = None
        steps: dict[int, dict] = {}
        while True:
            msg = self.worker.recv()
            kind = msg[0]
            if kind == "epoch":
                _, epoch, metrics, reused, key = msg
                steps[epoch] = metrics
                if training_run is None and tracker.enabled:
                    training_run = tracker.training_run(key, _material(cfg, key))
                if not reused:
                    store_dir = Path(cfg.paths.store_dir) / key / f"epoch-{epoch}"
                    tracker.log_training_epoch(training_run, epoch, metrics, store_dir)
                prune = False
                value = metrics.get("val_loss")
                if not self.spec.multi and value is not None and math.isfinite(value):
                    # Pruners read intermediate values in the study's direction: maximize -> report -loss.
                    trial.report(-value, epoch)
                    prune = trial.should_prune()
                self.worker.send(("prune", prune))
            elif kind == "done":
                result = msg[1]
                for k in ("training_key", "checkpoint", "eval_dir"):
                    trial.set_user_attr(k, result[k])
                trial.set_user_attr("trained_epochs", result["trained"])
                trial.set_user_attr("timings", result.get("timings", {}))
                trial.set_user_attr(
                    "constraints", [v for k, v in sorted(result["summary"].items()) if k.startswith("constraint_")]
                )
                trial.set_user_attr("reused", not result["trained"])
                trial.set_user_attr("summary", {k: v for k, v in result["summary"].items() if not k.endswith("_std")})
                values = self._values(result)
                tracker.finish_trial(
                    run_id,
                    "FINISHED",
                    metrics={**result["summary"], "objective": result["objective"]},
                    params={
                        "training_key": result["training_key"],
                        "reused": bool(not result["trained"]),
                        "checkpoint": result["checkpoint"],
                    },
                    tags={
                        "training_run_id": training_run or "",
                        "checkpoint": result["checkpoint"],
                        "training_key": result["training_key"],
                        "metric_backends": result["backends"],
                    },
                    artifacts=Path(result["eval_dir"]),
                    table=result["per_line"],
                    steps=steps,
                )
                study.tell(trial, values)
                self.log(
                    f"trial {trial.number}: objective {result['objective']:.4f} "
                    f"({'reused checkpoint' if not result['trained'] else 'trained ' + str(result['trained'])})"
                )
                return trial.number
            elif kind == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
                tracker.finish_trial(run_id, "KILLED", tags={"pruned_at_epoch": msg[1]}, steps=steps)
                self.log(f"trial {trial.number}: pruned at epoch {msg[1]}")
                return trial.number
            elif kind == "failed":
                return self._fail(study, trial, tracker, run_id, msg[1], msg[2], steps)
            elif kind == "died":
                return self._fail(study, trial, tracker, run_id, "WorkerDied", _death_reason(msg[1]), steps)

    def _values(self, result: dict) -> float | list[float]:
        if not self.spec.multi:
            return float(result["objective"])
        from qtts_sweep.metrics.objective import objective_vector

        return objective_vector(result["summary"], self.spec.objectives)

    def _fail(self, study, trial, tracker, run_id, kind: str, message: str, steps: dict | None = None) -> int:
        from optuna.trial import TrialState

        reason = f"{kind}: {message.strip().splitlines()[0] if message.strip() else ''}"[:1000]
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        tracker.finish_trial(
            run_id, "FAILED", tags={"fail_reason": reason, "fail_detail": message[-4000:]}, steps=steps
        )
        self.log(f"trial {trial.number}: FAILED ({reason})")
        return trial.number


def _material(cfg: Config, key: str) -> dict:
    """The key material the worker stored beside the checkpoints (no data check needed in the driver)."""
    import json

    path = Path(cfg.paths.store_dir) / key / "key.json"
    return json.loads(path.read_text())


def _redact(url: str) -> str:
    """A storage URL without its password (it goes into logs and MLflow params)."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def best_trial_summary(study, spec: SweepSpec) -> dict[str, Any] | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    from qtts_sweep.production.promote import select_trial

    best = select_trial(study, None, spec.multi)
    return {
        "number": best.number,
        "values": best.values,
        "params": best.params,
        "checkpoint": best.user_attrs.get("checkpoint"),
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
    }


def sweep_from_hydra(sweep_name: str, arguments: list[str], hydra_context: Any, config: Any) -> SweepOutcome:
    """Entry from the Hydra sweeper plugin: trial configs are composed by Hydra's own config loader."""
    from omegaconf import OmegaConf

    from qtts_sweep.config.loader import compose_with, finish
    from qtts_sweep.sweep.spec import load_spec

    loader = hydra_context.config_loader

    def compose(overrides: list[str]) -> Config:
        from hydra.types import RunMode

        def once(ov: list[str]):
            return loader.load_configuration(config_name="config", overrides=ov, run_mode=RunMode.MULTIRUN)

        cfg = compose_with(once, overrides)
        return finish(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))

    base_cfg = compose(list(arguments))
    spec = load_spec(sweep_name, max_epochs=base_cfg.train.max_epochs)
    spec_cfg = compose([*spec.base, *arguments])  # the base of the sweep file may change max_epochs
    spec = load_spec(sweep_name, max_epochs=spec_cfg.train.max_epochs)
    outcome = SweepDriver(spec, compose, list(arguments)).run()
    from qtts_sweep.sweep.report import finish_sweep

    finish_sweep(spec, outcome, spec_cfg, outcome.base_eval_dir)
    return outcome


def model_config_dict(cfg: Config) -> dict:
    """config.json of the configured model without loading weights (for planning)."""
    import json

    from qtts_sweep.model.tiny import shaped_model_config

    folder = Path(cfg.model.source)
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    if cfg.model.tiny:
        return shaped_model_config("tiny")
    return shaped_model_config("0.6b" if "0.6B" in cfg.model.source else "1.7b")


def plan_sweep(name: str, overrides: list[str], config_dir: str | None = None) -> str:
    """`qtts-sweep sweep <name> --plan`: validate the sweep and print what it can cost."""
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.spec import format_plan, load_spec, lora_param_count, plan

    spec = load_spec(name)
    cfg = load_config([*spec.base, *overrides], config_dir)
    spec = load_spec(name, max_epochs=cfg.train.max_epochs)
    n = lora_param_count(model_config_dict(cfg), cfg.lora.r, cfg.lora.target_modules, cfg.lora.scope)
    return format_plan(spec, plan(spec, n, cfg.eval.epoch)) + f"\n  LoRA parameters per checkpoint: {n:,}"


def launch(name: str, overrides: list[str], config_dir: str | None = None) -> int:
    """`qtts-sweep sweep <name>`: validate, then run the Hydra multirun with the qtts sweeper."""
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.hydra_app import run
    from qtts_sweep.sweep.spec import load_spec

    spec = load_spec(name)
    cfg = load_config([*spec.base, *overrides], config_dir)
    spec = load_spec(name, max_epochs=cfg.train.max_epochs)  # refuses epochs beyond the horizon, before anything
    sweep_dir = Path(cfg.paths.runs_dir) / "sweeps" / spec.study_name
    argv = [
        "--multirun",
        "hydra/sweeper=qtts",
        f"hydra.sweeper.sweep={spec.source}",
        f"hydra.sweep.dir={sweep_dir}/hydra",
        "hydra.job.chdir=false",
        # Hydra's logging config would route every library's INFO messages to the console.
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    if config_dir:
        argv += ["--config-dir", str(Path(config_dir).resolve())]
    return run([*argv, *overrides])


def closing_lines(cfg: Config, study_name: str, storage: str) -> str:
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    return "\n".join(
        [
            f"study `{study_name}` in {_redact(storage)}",
            f"  MLflow UI:        {make_tracker(cfg.tracking).ui_command()}",
            f"  optuna-dashboard: optuna-dashboard {_redact(storage)} --host 127.0.0.1 --port 8080",
            f"  again:            qtts-sweep report {study_name}",
            f"  promote the best: qtts-sweep promote {study_name}",
        ]
    )
