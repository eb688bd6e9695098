"""Resuming a study: which RUNNING trials were left by a dead driver, failing and re-queuing them, and the budget.

Owns: the per-study driver registry (host, pid), stale-trial detection (own host: the recorded driver pid is
dead; other hosts: Optuna's heartbeat grace period), re-queuing a stale trial's parameters once, and what counts
toward `n_trials`. Does not own: running trials (driver), storage construction (storage).

Every change goes through Optuna's public API: `study.tell(number, state=FAIL)` fails a trial another process
started, `study.set_user_attr("stale:<n>")` marks it (a per-trial key, so concurrent drivers never overwrite each
other's marks), `study.enqueue_trial(params, user_attrs={"retry_of": n})` re-queues it.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

from qtts_sweep.util.procs import pid_alive

ORPHAN_S = 5.0  # a live driver tags its trial within milliseconds of ask(); an untagged RUNNING trial older is orphaned
STALE_PREFIX = "stale:"


def register_driver(study) -> None:
    """Note this driver (host, pid) in the study, so a restart can tell its orphans from a live driver's trials."""
    study.set_user_attr(f"driver:{socket.gethostname()}:{os.getpid()}", time.time())


def tag_trial(trial) -> None:
    """Record which driver runs `trial` (read by `recover_stale` of a later driver)."""
    trial.set_user_attr("driver_host", socket.gethostname())
    trial.set_user_attr("driver_pid", os.getpid())


def _local_drivers(study) -> tuple[bool, bool]:
    """(a dead driver of this host is registered, another live driver of this host is registered)."""
    prefix = f"driver:{socket.gethostname()}:"
    pids = [int(k[len(prefix) :]) for k in study.user_attrs if k.startswith(prefix)]
    others = [p for p in pids if p != os.getpid()]
    return any(not pid_alive(p) for p in others), any(pid_alive(p) for p in others)


def _is_dead(t, now: datetime.datetime, dead_local: bool, live_local: bool) -> bool:
    pid = t.user_attrs.get("driver_pid")
    if pid is None:  # killed between ask() and tag_trial()
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        return (dead_local and not live_local) or age > ORPHAN_S
    return t.user_attrs.get("driver_host") == socket.gethostname() and pid != os.getpid() and not pid_alive(pid)


def requeue_stale(study, trial) -> None:
    """Mark a trial a dead driver left RUNNING (already failed) and re-queue its parameters once.

    Runs in exactly one process per stale trial: the one whose `study.tell` (own host, dead pid) or heartbeat check
    (Optuna's `heartbeat_stale_trial_callback`, other hosts) failed it. A retry that goes stale again is not re-queued a
    second time: a trial that keeps killing its driver (e.g. the whole node runs out of memory) must not loop.
    """
    study.set_user_attr(f"{STALE_PREFIX}{trial.number}", True)
    requeue_once(study, trial)


def not_the_trials_fault(kind: str, exitcode: int | None = None) -> bool:
    """The one re-queue policy: a trial ended by something outside it is run once more, a second time it stays
    failed. Outside causes: the worker was killed with SIGKILL (out of memory, an operator, a lost node) or the
    worker lost its training lease (it stalled past the lease ttl and another worker took the key over)."""
    import signal

    return kind == "LeaseLost" or (kind == "WorkerDied" and exitcode == -signal.SIGKILL)


def requeue_once(study, trial) -> bool:
    """Enqueue a failed trial's parameters again unless it is itself a retry; True when it was re-queued. The
    failed trial then no longer counts toward the budget (`budget_used`), its retry does."""
    if not trial.params or "retry_of" in trial.user_attrs:
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return True


def recover_stale(study, tracker=None) -> list[int]:
    """Fail trials a dead driver left RUNNING, re-queue their parameters, fail their MLflow runs; return their
    numbers.

    A trial is stale when its recorded driver (host, pid) is this host's and no longer alive; when it was killed
    before it could be tagged (no params yet: failed, nothing to re-queue) and a dead local driver is registered
    or it is older than ORPHAN_S; or when Optuna's heartbeat says so (another host, silent for GRACE_S). Safe to
    call from several drivers at once: only the one whose `tell` succeeds handles a trial.
    """
    import optuna
    from optuna.trial import TrialState

    dead_local, live_local = _local_drivers(study)
    now = datetime.datetime.now()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    mine = []
    for t in running:
        if not _is_dead(t, now, dead_local, live_local):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another driver was first
            continue
        requeue_stale(study, t)
        mine.append(t)
    try:
        optuna.storages.fail_stale_trials(
            study
        )  # other hosts; re-queued by the storage's heartbeat_stale_trial_callback
    except (AttributeError, TypeError, ValueError):  # storage without heartbeats (journal)
        pass
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    gone = [t for t in running if t.number in failed]
    if tracker is not None:
        for t in gone:
            tracker.finish_trial(
                t.user_attrs.get("mlflow_run_id"), "FAILED", tags={"fail_reason": "driver died; trial re-queued"}
            )
    return [t.number for t in gone]


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
