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


# ---- issue 18, items 1-3: a lost lease never destroys the new holder's work; breaking is compare-and-swap ----


def _checkpoint(value: float):
    import torch

    from qtts_sweep.train.store import Checkpoint

    return Checkpoint(
        adapter={"lora_A": torch.full((2, 2), value)},
        speaker_embedding=torch.zeros(4),
        metrics={"train_loss": value},
        config_yaml=f"writer: {value}\n",
    )


def _acquire_within(lease: TrainingLease, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lease.try_acquire():
            return True
        time.sleep(0.05)
    return False


def test_a_writer_that_lost_its_lease_never_moves_the_new_holders_epoch_aside(tmp_path):
    from qtts_sweep.train.store import CheckpointStore

    store = CheckpointStore(tmp_path)
    key_dir = store.key_dir("k")
    stalled = TrainingLease(key_dir, ttl=0.4)
    assert stalled.try_acquire()
    stalled._stop.set()  # the holder stalls (GPU hang, SIGSTOP): no more heartbeats
    new = TrainingLease(key_dir, ttl=0.4)
    assert _acquire_within(new, 5)
    store.save_epoch("k", 1, _checkpoint(2.0), before_commit=new.check)
    # the stalled holder wakes up, finishes its epoch and tries to save it
    with pytest.raises(LeaseLost):
        store.save_epoch("k", 1, _checkpoint(1.0), before_commit=stalled.check)
    assert not list(key_dir.glob("epoch-1.corrupt-*")), "the new holder's complete epoch was moved aside"
    assert float(store.load_adapter("k", 1)["lora_A"][0, 0]) == 2.0
    # and the commit itself refuses to replace a complete epoch, lease or not
    store.save_epoch("k", 1, _checkpoint(3.0))
    assert float(store.load_adapter("k", 1)["lora_A"][0, 0]) == 2.0
    assert not list(key_dir.glob("epoch-1.corrupt-*"))
    new.release()


def _interleave(monkeypatch, lease_path, action):
    """Run `action()` once, just before the first rename/replace/unlink of `lease_path` (the moment a read-then-act
    race would let another worker in), then the operation itself."""
    import os

    done = []
    real = {name: getattr(os, name) for name in ("rename", "replace", "unlink")}

    def hooked(name):
        def op(src, *args, **kwargs):
            if not done and os.fspath(src) == os.fspath(lease_path):
                done.append(True)
                action()
            return real[name](src, *args, **kwargs)

        return op

    for name in real:
        monkeypatch.setattr(os, name, hooked(name))


def test_two_breakers_of_one_expired_lease_never_break_the_fresh_one(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec = {"host": __import__("socket").gethostname(), "pid": dead.pid, "token": "x", "heartbeat": time.time()}
    (tmp_path / "lease.json").write_text(json.dumps(rec))
    b, c = TrainingLease(tmp_path, ttl=30), TrainingLease(tmp_path, ttl=30)
    # C has judged the dead holder's lease expired; before it acts, B breaks it and takes a fresh lease
    _interleave(monkeypatch, tmp_path / "lease.json", lambda: b.try_acquire())
    c_got = c.try_acquire()
    monkeypatch.undo()
    assert b.held(), "C broke B's fresh lease"
    assert not c_got and not c.held()
    b.check()
    b.release()


def test_release_never_removes_a_lease_someone_else_took_over(tmp_path, monkeypatch):
    a = TrainingLease(tmp_path, ttl=0.4)
    assert a.try_acquire()
    a._stop.set()  # stalled past the ttl: B may take over
    b = TrainingLease(tmp_path, ttl=0.4)
    _interleave(monkeypatch, tmp_path / "lease.json", lambda: _acquire_within(b, 5))
    a.release()  # A's release races B's take-over
    monkeypatch.undo()
    assert b.held(), "A's release removed B's lease"
    b.check()
    b.release()


def test_an_empty_or_unreadable_lease_file_expires_like_any_other(tmp_path):
    (tmp_path / "lease.json").write_text("")  # the holder died between create and write (or the disk was full)
    lease = TrainingLease(tmp_path, ttl=0.4)
    assert _acquire_within(lease, 5), "an empty lease.json blocked the key"
    lease.release()
    (tmp_path / "lease.json").write_text('{"host": "x", "pi')  # torn write
    lease = TrainingLease(tmp_path, ttl=0.4)
    assert _acquire_within(lease, 5), "a torn lease.json blocked the key"
    lease.release()


def test_a_live_holder_with_a_fresh_heartbeat_is_never_broken(tmp_path):
    holder = TrainingLease(tmp_path, ttl=0.5)
    assert holder.try_acquire()
    other = TrainingLease(tmp_path, ttl=0.5)
    assert not _acquire_within(other, 1.5)  # three ttl: only the heartbeat keeps it
    holder.check()
    holder.release()
