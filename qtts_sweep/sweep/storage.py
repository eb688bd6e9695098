"""Optuna storage, study creation, samplers, pruners and trial heartbeats.

Owns: which storage a URL means (`sqlite:///` and any SQLAlchemy URL -> RDBStorage with heartbeats; `journal:PATH`
-> JournalStorage on a file), how a database server's outage is ridden out (bounded retries, then a clear error),
how many connections one driver may hold, opening the study with the sweep's sampler and pruner, the heartbeat
thread of a running trial. Does not own: what a trial does, when to stop (driver), recovering stale trials
(recovery).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from qtts_sweep.sweep.spec import SweepSpec
from qtts_sweep.util.urls import redact

HEARTBEAT_S = 5  # trial heartbeat period; a RUNNING trial silent for GRACE_S is stale
GRACE_S = 20
# A database server that restarts (PostgreSQL upgrade, failover, a node reboot) drops every connection. Each
# storage call is retried with exponential backoff for up to STORAGE_RETRY_S, then the driver stops with
# StorageUnavailable. The delay is capped low so that heartbeats resume within seconds of the server's return
# (a trial silent for GRACE_S after that would look stale to other drivers).
STORAGE_RETRY_S = 120.0
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 2.0
# Connections per driver: the trial loop and the heartbeat thread each hold one at a time; one spare. The
# server needs max_connections >= 3 x drivers (+ what else uses it); PostgreSQL's default is 100.
POOL = {"pool_size": 2, "max_overflow": 1, "pool_timeout": 60, "pool_pre_ping": True, "pool_recycle": 1800}
CONNECT_TIMEOUT_S = 10  # an unreachable host fails a connection attempt (then retried) instead of hanging on TCP


class StorageUnavailable(RuntimeError):
    """The study's database did not answer within the retry budget."""


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


def make_storage(url: str, heartbeat_stale_trial_callback: Any = None, retry_s: float = STORAGE_RETRY_S):
    """The storage a URL names. `heartbeat_stale_trial_callback(study, trial)` runs in the one process whose heartbeat
    check failed a stale trial (Optuna's own mechanism for re-queuing it exactly once). A database URL gets bounded
    connections and retries that outlast a server restart (STORAGE_RETRY_S)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url[len("journal:") :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # open(2)-based lock: works wherever the journal file can be created (the symlink lock needs more).
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):  # SQLite has no server to lose and no connection limit
        kwargs = dict(POOL)
        if url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    storage_cls = _retrying_rdb_storage()

    def build():
        return storage_cls(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
            retry_s=retry_s,
        )

    return with_retries(build, url, retry_s, "opening the storage")


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a lost or refused database connection, as opposed to a real error
    (an integrity violation, a bad query, a finished trial) that retrying cannot fix."""
    from sqlalchemy import exc as sa_exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def with_retries(call, url: str, retry_s: float, what: str):
    """`call()`, retried on connection errors with capped exponential backoff for up to `retry_s`; each retry
    says so on stderr, and running out raises StorageUnavailable naming the server and the fix."""
    start, delay, attempt = time.monotonic(), RETRY_FIRST_S, 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            attempt += 1
            waited = time.monotonic() - start
            reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            if waited + delay > retry_s:
                raise StorageUnavailable(
                    f"the Optuna storage {redact(url)} did not answer for {waited:.0f} s ({attempt} attempts, "
                    f"{what}): {reason}. Fix: check that the database server is up and reachable, then run the "
                    "same command again: the study resumes (a trial left RUNNING is failed and re-queued)."
                ) from None
            print(
                f"qtts-sweep: storage connection lost ({what}: {reason}); retry {attempt} in {delay:.2f} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


# Every storage operation a driver, a report or the heartbeat calls: BaseStorage and BaseHeartbeat, plus the
# underscored RDBStorage methods that Optuna's own trial cache (which wraps every RDBStorage) calls instead.
_RETRIED = (
    "create_new_study delete_study set_study_user_attr set_study_system_attr get_study_id_from_name "
    "get_study_name_from_id get_study_directions get_study_user_attrs get_study_system_attrs get_all_studies "
    "create_new_trial set_trial_param get_trial_id_from_study_id_trial_number get_trial_number_from_id "
    "get_trial_param set_trial_state_values set_trial_intermediate_value set_trial_user_attr set_trial_system_attr "
    "get_trial get_all_trials get_n_trials get_best_trial get_trial_params get_trial_user_attrs "
    "get_trial_system_attrs record_heartbeat _get_stale_trial_ids _create_new_trial _set_trial_param "
    "_get_best_trial_id _get_trials"
).split()
_storage_cls = None


def _retrying_rdb_storage():
    """RDBStorage whose operations ride out a server restart (see STORAGE_RETRY_S).

    A subclass, not a wrapper, so Optuna still recognizes it (its trial cache and heartbeat checks test
    `isinstance(storage, RDBStorage)`). Only the outermost call retries (RDBStorage methods call each other), so
    the bound holds. A write whose commit reached the server just before the connection dropped is retried too:
    creating a trial may then leave one extra RUNNING trial, which heartbeat recovery fails and re-queues.
    """
    global _storage_cls
    if _storage_cls is not None:
        return _storage_cls
    import functools

    import optuna

    local = threading.local()

    def retrying(name: str):
        method = getattr(optuna.storages.RDBStorage, name)

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            if getattr(local, "depth", 0):
                return method(self, *args, **kwargs)
            local.depth = 1
            try:
                return with_retries(lambda: method(self, *args, **kwargs), self.url, self.retry_s, name)
            finally:
                local.depth = 0

        return call

    def __init__(self, url: str, *args, retry_s: float = STORAGE_RETRY_S, **kwargs):
        self.retry_s = retry_s
        optuna.storages.RDBStorage.__init__(self, url, *args, **kwargs)

    body = {"__init__": __init__, **{name: retrying(name) for name in _RETRIED}}
    _storage_cls = type("RetryingRDBStorage", (optuna.storages.RDBStorage,), body)
    globals()["RetryingRDBStorage"] = _storage_cls  # so pickle finds the class by name
    return _storage_cls


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
    """The sweep's study with its sampler, pruner and metric names, created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        directions=spec.directions if spec.multi else ["maximize"],
        load_if_exists=True,
    )
    names = metric_names(spec)
    if study.metric_names != names:  # dashboards label their axes with these, not "Objective 0"
        study.set_metric_names(names)
    return study


def metric_names(spec: SweepSpec) -> list[str]:
    """What each objective value is called in Optuna (and so in optuna-dashboard's plots)."""
    return list(spec.objectives) if spec.multi else [f"{spec.objective} objective"]


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


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal storage URL (None for a database server)."""
    if url.startswith("journal:"):
        return Path(url[len("journal:") :])
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return Path(database) if database and database != ":memory:" else None
    return None


def open_existing_storage(url: str):
    """The storage at `url` for a command that only reads it; a clear error when its file does not exist, since
    opening it would create an empty one (and gc would then protect no checkpoint)."""
    from qtts_sweep.config.schema import Problem, ValidationError
    from qtts_sweep.util.urls import redact

    path = storage_file(url)
    if path is not None and not path.is_file():
        raise ValidationError(
            [
                Problem(
                    "--storage",
                    redact(url),
                    f"no Optuna storage at {path}",
                    "run a sweep first (e.g. `qtts-sweep sweep tiny`), or pass --storage <url> of the sweep's storage",
                )
            ],
            "request",
        )
    return make_storage(url)


def load_existing_study(study_name: str, url: str):
    """An existing study (report, promote, gc read studies, never create them); a clear error naming the studies
    that do exist when there is no such study."""
    import optuna

    from qtts_sweep.config.schema import Problem, ValidationError
    from qtts_sweep.util.urls import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_existing_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        fix = f"studies there: {names}" if names else "run a sweep first: qtts-sweep sweep <name>"
        raise ValidationError(
            [Problem("study", study_name, f"does not exist in {redact(url)}", fix + " (or pass --storage URL)")],
            "request",
        ) from None
