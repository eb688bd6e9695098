"""Where a study is stored: which storage a URL means, riding out a database outage, opening existing studies.

Owns: URL -> storage (`sqlite:///` and any SQLAlchemy URL -> RDBStorage behind a retrying wrapper; `journal:PATH`
-> JournalStorage on a file), how a database server's outage is ridden out (bounded retries at one call site,
then a clear error), how many connections one driver may hold, the default storages under runs/, opening a study
that must already exist. Does not own: samplers, pruners and creating the study (search.py), trial heartbeats
(heartbeat.py), what a trial does, when to stop (driver), recovering stale trials (recovery).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtts_sweep.util.log import get_logger
from qtts_sweep.util.urls import redact

log = get_logger(__name__)

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


def make_storage(url: str, retry_s: float = STORAGE_RETRY_S):
    """The storage a URL names. A database URL gets bounded connections and retries that outlast a server restart
    (STORAGE_RETRY_S). No Optuna heartbeat: trials carry the driver's own (TrialHeartbeat), the same for every
    storage, the journal file included (Optuna's exists only for RDBStorage)."""
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
    cls = _retrying_storage_cls()
    rdb = with_retries(
        lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs), url, retry_s, "opening the storage"
    )
    storage = cls(rdb, url, retry_s)
    _watch_connection_losses(storage)
    return storage


def _watch_connection_losses(storage) -> None:
    """Note in `storage.outage_ended` every lost connection SQLAlchemy sees, including the silent ones: after a
    server restart the pool's pre-ping finds its connections dead and reconnects without an error reaching us,
    and a driver that was busy during the outage must still know there was one (recovery.recover_stale)."""
    from sqlalchemy import event

    def lost(*_args) -> None:
        storage.outage_ended = time.monotonic()

    event.listen(storage.rdb.engine.pool, "invalidate", lost)
    event.listen(storage.rdb.engine.pool, "soft_invalidate", lost)


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


def with_retries(call, url: str, retry_s: float, what: str, on_retry=None):
    """`call()`, retried on connection errors with capped exponential backoff for up to `retry_s`; each retry
    says so on stderr (and is passed to `on_retry`), and running out raises StorageUnavailable naming the server
    and the fix."""
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
            if on_retry is not None:
                on_retry(exc)
            log.warning(f"storage connection lost ({what}: {reason}); retry {attempt} in {delay:.2f} s")
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


class _Retrying:
    """A database-backed Optuna storage whose every operation rides out a server restart (see STORAGE_RETRY_S).

    `RetryingStorage` (built on first use by `_retrying_storage_cls`, so that importing this module does not
    import Optuna) is this plus `optuna.storages.BaseStorage`, the public base class Optuna documents for custom
    storages: a delegating wrapper around an `RDBStorage` whose every public method is retried at this one call
    site; no Optuna internals are overridden. A write whose commit reached the server just before the connection
    dropped is retried too; for the one that matters -- popping an enqueued trial (WAITING -> RUNNING) -- the
    retry finds the trial RUNNING and Optuna's `ask` moves on, leaving a RUNNING trial without parameters that
    `recovery` fails and re-queues from the point it carries (`recovery.enqueue_point`), so every enqueued point
    still runs exactly once.

    `outage_ended` is the monotonic time the last connection loss ended: stale-trial detection waits a grace
    period after it, so that other drivers' heartbeats get a chance to resume first (recovery.recover_stale).
    """

    def __init__(self, rdb, url: str, retry_s: float) -> None:
        self.rdb, self.url, self.retry_s = rdb, url, retry_s
        self.outage_ended: float | None = None

    def _call(self, name: str, *args, **kwargs):
        failed: list[BaseException] = []
        method = getattr(self.rdb, name)
        result = with_retries(lambda: method(*args, **kwargs), self.url, self.retry_s, name, on_retry=failed.append)
        if failed:
            self.outage_ended = time.monotonic()
        return result

    def __getstate__(self):
        return {"rdb": self.rdb, "url": self.url, "retry_s": self.retry_s, "outage_ended": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        _watch_connection_losses(self)


_storage_cls = None


def _retrying_storage_cls():
    global _storage_cls
    if _storage_cls is not None:
        return _storage_cls
    import optuna

    def method(name: str):
        def call(self, *args, **kwargs):
            return self._call(name, *args, **kwargs)

        call.__name__ = name
        return call

    names = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")]
    body = {name: method(name) for name in names if callable(getattr(optuna.storages.BaseStorage, name))}
    body["__module__"] = __name__
    _storage_cls = type("RetryingStorage", (_Retrying, optuna.storages.BaseStorage), body)
    globals()["RetryingStorage"] = _storage_cls  # so pickle finds the class by name
    return _storage_cls


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
    from qtts_sweep.util.problems import Problem, ValidationError
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

    from qtts_sweep.util.problems import Problem, ValidationError
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
