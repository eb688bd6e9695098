"""Optuna storage, study creation, samplers, pruners and trial heartbeats.

Owns: which storage a URL means (`sqlite:///` and any SQLAlchemy URL -> RDBStorage with heartbeats; `journal:PATH`
-> JournalStorage on a file), opening the study with the sweep's sampler and pruner, the heartbeat thread of a
running trial. Does not own: what a trial does, when to stop (driver), recovering stale trials (recovery).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qtts_sweep.sweep.spec import SweepSpec

HEARTBEAT_S = 5  # trial heartbeat period; a RUNNING trial silent for GRACE_S is stale
GRACE_S = 20


def default_storage(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir) / 'optuna.db'}"


def journal_storage(runs_dir: str) -> str:
    """Optuna's journal file: several processes on one machine (its file lock is not safe on NFS)."""
    return f"journal:{Path(runs_dir) / 'optuna-journal.log'}"


def default_storage_for(study_name: str, runs_dir: str) -> str:
    """Where a study lives when no storage is given: the journal file under runs/ if the study is there (a sweep
    with several workers), else the SQLite file (one worker, and where an unknown study is reported missing)."""
    journal = Path(runs_dir) / "optuna-journal.log"
    if journal.is_file():
        import optuna

        url = journal_storage(runs_dir)
        if study_name in {s.study_name for s in optuna.get_all_study_summaries(make_storage(url))}:
            return url
    return default_storage(runs_dir)


def default_storages(runs_dir: str) -> list[str]:
    """Every default storage that exists under runs/ (gc looks at all of them)."""
    out = [default_storage(runs_dir)]
    if (Path(runs_dir) / "optuna-journal.log").is_file():
        out.append(journal_storage(runs_dir))
    return out


def make_storage(url: str, heartbeat_stale_trial_callback: Any = None):
    """The storage a URL names. `heartbeat_stale_trial_callback(study, trial)` runs in the one process whose heartbeat
    check failed a stale trial (Optuna's own mechanism for re-queuing it exactly once)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url[len("journal:") :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # open(2)-based lock: works wherever the journal file can be created (the symlink lock needs more).
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
    )


def trial_constraints(trial) -> list[float]:
    """Optuna constraints_func: the violations the driver stored (<= 0 feasible); none yet counts as feasible."""
    return list(trial.user_attrs.get("constraints", [0.0]))


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
    grid = {name: p.values() for name, p in spec.space.items()}
    return optuna.samplers.GridSampler(grid, seed=spec.sampler_seed)


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


def open_study(spec: SweepSpec, storage: Any):
    """The sweep's study with its sampler and pruner, created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        directions=spec.directions if spec.multi else ["maximize"],
        load_if_exists=True,
    )


def trial_id(trial) -> int:
    """The storage id of a trial. Optuna gap: heartbeats are recorded by storage id
    (`BaseHeartbeat.record_heartbeat(trial_id)`), and neither `Trial` nor `FrozenTrial` exposes it publicly;
    this is the one place that reads the private attribute."""
    return trial._trial_id


class Heartbeat:
    """Records a running trial's heartbeat every HEARTBEAT_S in a thread (Optuna does this only in `optimize()`)."""

    def __init__(self, storage: Any, trial) -> None:
        self._stop = threading.Event()
        self._thread = None
        if hasattr(storage, "record_heartbeat"):  # RDB storages; the journal storage has none
            tid = trial_id(trial)
            storage.record_heartbeat(tid)
            self._thread = threading.Thread(target=self._run, args=(storage, tid), daemon=True)
            self._thread.start()

    def _run(self, storage: Any, tid: int) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                storage.record_heartbeat(tid)
            except Exception:  # the trial finished meanwhile
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=HEARTBEAT_S + 1)


def load_existing_study(study_name: str, url: str):
    """An existing study (report, promote, gc read studies, never create them); a clear error naming the studies
    that do exist when there is no such study."""
    import optuna

    from qtts_sweep.config.schema import Problem, ValidationError
    from qtts_sweep.util.urls import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        fix = f"studies there: {names}" if names else "run a sweep first: qtts-sweep sweep <name>"
        raise ValidationError(
            [Problem("study", study_name, f"does not exist in {redact(url)}", fix + " (or pass --storage URL)")],
            "request",
        ) from None
