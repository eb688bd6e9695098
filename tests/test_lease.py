"""Training leases on a real folder: one holder at a time, expiry after a dead holder or a stale heartbeat."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from qtts_sweep.train.lease import LeaseLost, TrainingLease


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    a, b = TrainingLease(tmp_path, ttl=30), TrainingLease(tmp_path, ttl=30)
    assert a.try_acquire()
    assert not b.try_acquire()
    assert a.held() and not b.held()
    a.release()
    assert b.try_acquire()
    b.release()
    assert not (tmp_path / "lease.json").exists()


def test_a_dead_holders_lease_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec = {"host": __import__("socket").gethostname(), "pid": dead.pid, "token": "x", "heartbeat": time.time()}
    (tmp_path / "lease.json").write_text(json.dumps(rec))
    lease = TrainingLease(tmp_path, ttl=30)
    assert lease.try_acquire()
    assert lease.held()
    lease.release()


def test_a_silent_holder_expires_after_the_ttl_and_loses_the_right_to_write(tmp_path):
    holder = TrainingLease(tmp_path, ttl=0.6)
    assert holder.try_acquire()
    holder._stop.set()  # the holder stalls: no more heartbeats
    other = TrainingLease(tmp_path, ttl=0.6)
    assert not other.try_acquire()
    time.sleep(1.0)
    assert other.try_acquire()
    with pytest.raises(LeaseLost, match="lost the training lease"):
        holder.check()
    other.release()


def test_heartbeats_keep_a_live_lease(tmp_path):
    holder = TrainingLease(tmp_path, ttl=0.8)
    assert holder.try_acquire()
    time.sleep(1.6)  # two ttl: only the heartbeat keeps it
    assert not TrainingLease(tmp_path, ttl=0.8).try_acquire()
    holder.check()
    holder.release()


def test_a_killed_but_unreaped_process_counts_as_dead():
    import os
    import signal

    from qtts_sweep.util.procs import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        time.sleep(0.5)  # a zombie now: its parent (this test) has not waited for it yet
        assert not pid_alive(child.pid)
    finally:
        child.wait()
