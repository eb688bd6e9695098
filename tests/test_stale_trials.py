"""Stale trials with many drivers on one study (issue 18, items 5-7): a database outage longer than the grace
period never fails a live driver's trial; a trial whose pop reply was lost still runs its point exactly once; a
driver killed with -9 on the journal storage (no Optuna heartbeat) has its trial failed and re-queued.

Real parts: PostgreSQL (tests/helpers/services.py) restarted for real, Optuna's journal file, real processes killed with
SIGKILL. A "driver" here is the study side of `SweepDriver` (ask, tag, heartbeat, tell, recover_stale) without
a model: what is under test is the study protocol, which is the same whatever a trial computes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

from qtts_sweep.sweep import heartbeat
from qtts_sweep.sweep.heartbeat import TrialHeartbeat
from qtts_sweep.sweep.recovery import budget_used, enqueue_point, recover_stale, requeued, tag_trial
from qtts_sweep.sweep.storage import journal_storage, make_storage


@pytest.fixture
def short_grace(monkeypatch):
    monkeypatch.setattr(heartbeat, "GRACE_S", 3.0)
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.5)
    return 3.0


def test_an_outage_longer_than_the_grace_period_never_fails_a_live_drivers_trial(pg_cluster, short_grace):
    url = pg_cluster.url(pg_cluster.create_db("outage"), with_password=True)
    storage_a, storage_b = make_storage(url), make_storage(url)
    study_a = optuna.create_study(study_name="s", storage=storage_a)
    study_b = optuna.load_study(study_name="s", storage=storage_b)
    trial = study_a.ask()
    trial.suggest_float("x", 0, 1)
    tag_trial(trial)
    heartbeat = TrialHeartbeat(trial)
    assert recover_stale(study_b, storage=storage_b) == []
    pg_cluster.stop()
    time.sleep(short_grace + 1.5)  # longer than the grace period: every heartbeat is older than that now
    pg_cluster.start()
    # driver B looks for stale trials right after the server is back (it was busy meanwhile, saw no error)
    assert recover_stale(study_b, storage=storage_b) == [], "B failed A's live trial"
    time.sleep(short_grace + 1.0)  # A's heartbeat resumed: still alive after the grace period
    assert recover_stale(study_b, storage=storage_b) == []
    heartbeat.stop()
    study_a.tell(trial, 1.0)  # A finishes: its result is recorded
    assert [t.state for t in study_b.get_trials()] == [TrialState.COMPLETE]


def test_a_point_whose_pop_reply_was_lost_still_runs_exactly_once(tmp_path, short_grace):
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    points = [{"x": float(i)} for i in range(4)]
    for point in points:
        enqueue_point(study, point, baseline=True)
    orphan = study.ask()  # the pop committed, but its reply was lost: RUNNING, never got its parameters
    assert not orphan.params
    time.sleep(short_grace + 0.5)
    while True:  # the drivers go on: recover, pop, run, tell
        recover_stale(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
        trial = study.ask()
        tag_trial(trial)
        x = trial.suggest_float("x", 0, 10)
        study.tell(trial, x)
    ran = sorted(t.params["x"] for t in study.get_trials() if t.state == TrialState.COMPLETE)
    assert ran == [p["x"] for p in points], "an enqueued point was lost or ran twice"
    assert orphan.number in requeued(study.get_trials())
    assert budget_used(study) == (4, 0, 0)


DRIVER = textwrap.dedent(
    """
    import sys, time, optuna
    from qtts_sweep.sweep import heartbeat
    heartbeat.HEARTBEAT_S = 0.5
    from qtts_sweep.sweep.recovery import tag_trial
    from qtts_sweep.sweep.heartbeat import TrialHeartbeat
    from qtts_sweep.sweep.storage import make_storage
    study = optuna.load_study(study_name="s", storage=make_storage(sys.argv[1]))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    tag_trial(trial)
    TrialHeartbeat(trial)
    print("running", flush=True)
    time.sleep(600)
    """
)


def test_a_driver_killed_on_the_journal_storage_has_its_trial_failed_and_requeued(tmp_path, short_grace, capsys):
    url = journal_storage(str(tmp_path))
    study = optuna.create_study(study_name="s", storage=make_storage(url))
    env = {**os.environ, "QTTS_DRIVER_HOST": "node-b"}  # as if on another node: no local pid check
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, url], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(short_grace + 1.0)
        assert recover_stale(study) == []  # alive: heartbeats keep coming
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while not (stale := recover_stale(study)):
            assert time.monotonic() - killed < 5 * short_grace, "the dead driver's trial was never failed"
            time.sleep(0.2)
        took = time.monotonic() - killed
    finally:
        proc.kill()
    trials = study.get_trials()
    assert stale == [0] and trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].params == trials[0].params or trials[1].user_attrs["point"] == trials[0].params
    assert short_grace - 1.0 <= took <= short_grace + 8.0  # the grace period, plus polling on a loaded machine
    with capsys.disabled():
        print(f"\njournal storage: a kill -9'd driver's trial was failed and re-queued {took:.1f} s after the kill")
