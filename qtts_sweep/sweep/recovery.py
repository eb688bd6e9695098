"""Resuming a study: which RUNNING trials were left by a dead driver, failing and re-queuing them, and the budget.

Owns: the per-study driver registry (host, pid), stale-trial detection (own host: the recorded driver pid is
dead; other hosts: the trial's own heartbeat, silent for the grace period, judged only once this driver's own
database connection has been back for that long), the one re-queue policy (what is re-queued, and only once),
enqueuing points, and what counts toward `n_trials`. Does not own: running trials (driver), storage
construction and the heartbeat thread (storage).

Every change goes through Optuna's public API: `study.tell(number, state=FAIL)` fails a trial another process
started, `study.set_user_attr("stale:<n>")` marks it (a per-trial key, so concurrent drivers never overwrite each
other's marks), `study.enqueue_trial(params, user_attrs={"retry_of": n, "point": params})` re-queues it.
"""

from __future__ import annotations

import os
import socket
import time

from qtts_sweep.util.procs import pid_alive

STALE_PREFIX = "stale:"
HOST_ENV = "QTTS_DRIVER_HOST"  # overrides the host name drivers record (containers on many nodes may share one)


def driver_host() -> str:
    """The name this driver records as its host: a dead pid is only trusted on the same host."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def register_driver(study) -> None:
    """Note this driver (host, pid) in the study, so a restart can tell its orphans from a live driver's trials."""
    study.set_user_attr(f"driver:{driver_host()}:{os.getpid()}", time.time())


def tag_trial(trial) -> None:
    """Record which driver runs `trial` (read by `recover_stale` of a later driver)."""
    trial.set_user_attr("driver_host", driver_host())
    trial.set_user_attr("driver_pid", os.getpid())


def _local_drivers(study) -> tuple[bool, bool]:
    """(a dead driver of this host is registered, another live driver of this host is registered)."""
    prefix = f"driver:{driver_host()}:"
    pids = [int(k[len(prefix) :]) for k in study.user_attrs if k.startswith(prefix)]
    others = [p for p in pids if p != os.getpid()]
    return any(not pid_alive(p) for p in others), any(pid_alive(p) for p in others)


def enqueue_point(study, params: dict, **marks) -> None:
    """Enqueue a point (a baseline, a retry) to run once. The point rides along as the `point` user attribute, so a
    trial that was popped but never got its parameters (a lost database reply, a driver killed right after ask)
    can still be re-queued from it; `marks` (e.g. baseline=True, retry_of=N) become user attributes too."""
    study.enqueue_trial(params, user_attrs={**marks, "point": dict(params)}, skip_if_exists="retry_of" not in marks)


def _heartbeat_age(t, now: float) -> float:
    """Seconds since the trial's last heartbeat (or, before its first, since it started), by the writer's clock."""
    beat = t.user_attrs.get("heartbeat")
    if isinstance(beat, list) and len(beat) == 2:
        return now - float(beat[1])
    return now - t.datetime_start.timestamp() if t.datetime_start else 0.0


def _is_dead(t, now: float, dead_local: bool, live_local: bool, grace: float) -> bool:
    pid = t.user_attrs.get("driver_pid")
    host = t.user_attrs.get("driver_host")
    if pid is None and dead_local and not live_local:  # killed between ask() and tag_trial() on this host
        return True
    if pid is not None and host == driver_host():
        return pid != os.getpid() and not pid_alive(pid)
    return _heartbeat_age(t, now) > grace  # another host (or untagged): silent for the grace period


def requeue_stale(study, trial) -> None:
    """Mark a trial a dead driver left RUNNING (already failed) and re-queue it once.

    A stale trial that never got its parameters (its driver died, or lost the reply, right after popping it)
    never ran: the point it carries is re-queued as it was. One that ran is re-queued once
    (`requeue_once`): a trial that keeps killing its driver (e.g. the whole node runs out of memory) must not loop.
    """
    study.set_user_attr(f"{STALE_PREFIX}{trial.number}", True)
    point = trial.user_attrs.get("point")
    if not trial.params and point:
        marks = {k: v for k, v in trial.user_attrs.items() if k not in ("point", "heartbeat")}
        marks = {k: v for k, v in marks.items() if not k.startswith("driver_")}
        enqueue_point(study, point, **{**marks, "retry_of": trial.number})
        return
    requeue_once(study, trial)


def not_the_trials_fault(kind: str, exitcode: int | None = None) -> bool:
    """The one re-queue policy: a trial ended by something outside it is run once more, a second time it stays
    failed. Outside causes: the worker was killed with SIGKILL (out of memory, an operator, a lost node) or the
    worker lost its training lease (it stalled past the lease ttl and another worker took the key over). A dead
    driver's trials are re-queued by `requeue_stale`, an interrupted (Ctrl-C) trial by the driver."""
    import signal

    return kind == "LeaseLost" or (kind == "WorkerDied" and exitcode == -signal.SIGKILL)


def requeue_once(study, trial) -> bool:
    """Enqueue a failed trial's parameters again unless it is itself a retry; True when it was re-queued. The
    failed trial then no longer counts toward the budget (`budget_used`), its retry does."""
    if not trial.params or "retry_of" in trial.user_attrs:
        return False
    enqueue_point(study, trial.params, retry_of=trial.number)
    return True


def recover_stale(study, tracker=None, storage=None) -> list[int]:
    """Fail trials a dead driver left RUNNING, re-queue them, fail their MLflow runs; return their numbers.

    A trial is stale when its recorded driver (host, pid) is this host's and no longer alive; when it was popped
    but never tagged and a dead local driver is registered (none alive); or when its heartbeat
    (storage.TrialHeartbeat) is older than GRACE_S (another host, or never tagged). The same rule for every
    storage, the journal file included. After this driver's own database connection was lost (`storage` is the
    study's RetryingStorage), nothing is judged by heartbeat until GRACE_S after the connection came back: the
    other drivers' heartbeats were blocked by the same outage and need that long to resume. Safe to call from
    several drivers at once: only the one whose `tell` succeeds handles a trial.
    """
    import optuna
    from optuna.trial import TrialState

    from qtts_sweep.sweep import heartbeat

    grace = heartbeat.GRACE_S
    outage = getattr(storage, "outage_ended", None)
    heartbeat_judged = outage is None or time.monotonic() - outage > grace
    dead_local, live_local = _local_drivers(study)
    now = time.time()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    mine = []
    for t in running:
        if not _is_dead(t, now, dead_local, live_local, grace if heartbeat_judged else float("inf")):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another driver was first
            continue
        requeue_stale(study, t)
        mine.append(t)
    if tracker is not None:
        for t in mine:
            tracker.finish_trial(
                t.user_attrs.get("mlflow_run_id"), "FAILED", tags={"fail_reason": "driver died; trial re-queued"}
            )
    return [t.number for t in mine]


def requeued(trials) -> set[int]:
    """Numbers of the trials that were re-queued (a later trial records them in `retry_of`)."""
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


def stale_numbers(study) -> set[int]:
    return {int(k[len(STALE_PREFIX) :]) for k in study.user_attrs if k.startswith(STALE_PREFIX)}


def budget_used(study) -> tuple[int, int, int]:
    """(complete, pruned, failed) finished trials that count toward n_trials.

    Not counted: trials re-queued after an interruption or a dead driver (their retry counts instead), and stale
    trials killed before they had parameters.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    skip = requeued(trials) | stale_numbers(study)
    counted = [t for t in trials if t.number not in skip and not t.user_attrs.get("interrupted")]
    return (
        sum(t.state == TrialState.COMPLETE for t in counted),
        sum(t.state == TrialState.PRUNED for t in counted),
        sum(t.state == TrialState.FAIL for t in counted),
    )
