"""Many drivers on one study (issue: scale out): budget, no epoch trained twice, and faults.

Real parts throughout: driver processes started by `qtts-sweep sweep --workers N`, Optuna's journal storage, an
`mlflow server` in front of the SQLite tracking store, training leases in the real checkpoint store, kill -9.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from qtts_sweep.sweep.recovery import budget_used, stale_numbers
from qtts_sweep.sweep.report import training_summary
from qtts_sweep.sweep.spec import load_spec
from qtts_sweep.sweep.storage import journal_storage, load_existing_study
from qtts_sweep.tracking.mlflow_tracker import STUDY_PREFIX
from qtts_sweep.train.lease import TrainingLease
from qtts_sweep.train.store import CheckpointStore
from tests.helpers.sweeps import CHEAP, tiny_paths

pytestmark = pytest.mark.slow

# Optuna state -> the MLflow run status that must go with it
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _sweep_file(tmp: Path, n_trials: int) -> Path:
    text = Path(load_spec("tiny").source).read_text().replace("n_trials: 12", f"n_trials: {n_trials}")
    path = tmp / f"tiny{n_trials}.yaml"
    path.write_text(text)
    return path


def _cmd(tmp: Path, tiny_model_dir: Path, sweep: Path, workers: int, *extra: str) -> list[str]:
    paths = tiny_paths(tmp, tiny_model_dir)
    cli = [sys.executable, "-m", "qtts_sweep.cli", "sweep", str(sweep), "--workers", str(workers)]
    return [*cli, *extra, *CHEAP, *paths]


def _own_config_dir(tmp: Path) -> list[str]:
    """The README's way to bring your own configs: `data=mine --config-dir DIR` (DIR/data/mine.yaml)."""
    mine = tmp / "myconf" / "data"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text((Path(__file__).parents[1] / "conf" / "data" / "demo.yaml").read_text())
    return ["data=mine", "--config-dir", str(mine.parent)]


def _agree_with_mlflow(tmp: Path, study) -> None:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    for t in study.get_trials():
        run_id = t.user_attrs.get("mlflow_run_id")
        if t.state.name == "FAIL" and t.user_attrs.get("interrupted"):
            expected = "KILLED"
        else:
            expected = STATUS[t.state.name]
        assert run_id, f"trial {t.number} has no MLflow run"
        assert client.get_run(run_id).info.status == expected, (t.number, t.state.name)
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    trial_runs = client.search_runs([exp.experiment_id], "tags.qtts_role = 'trial'", max_results=1000)
    assert len(trial_runs) == len([t for t in study.get_trials() if t.user_attrs.get("mlflow_run_id")])


def _no_partial_checkpoint(tmp: Path) -> None:
    store = CheckpointStore(tmp / "store")
    for key_dir in (tmp / "store").iterdir():
        listed = store.epochs(key_dir.name)
        visible = sorted(int(p.name[6:]) for p in key_dir.glob("epoch-*") if p.name[6:].isdigit())
        assert listed == visible, f"{key_dir}: folders {visible}, complete {listed}"


def test_two_workers_finish_the_budget_and_train_no_epoch_twice(tmp_path, tiny_model_dir):
    sweep = _sweep_file(tmp_path, 8)
    cmd = _cmd(tmp_path, tiny_model_dir, sweep, 2, *_own_config_dir(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load_existing_study("tiny", journal_storage(str(tmp_path)))
    assert 8 <= sum(budget_used(study)) <= 8 + 1  # at most N-1 over
    summary = training_summary(study, tmp_path / "store")
    assert summary["trained_twice"] == 0
    assert summary["epochs_trained"] == summary["lower_bound"]
    # the store's training logs see every epoch any worker began, also one computed and then thrown away
    assert summary["epochs_computed"] == summary["lower_bound"] and summary["epochs_lost"] == 0
    assert "trained twice: 0" in proc.stdout
    drivers = {t.user_attrs["driver_pid"] for t in study.get_trials() if "driver_pid" in t.user_attrs}
    assert len(drivers) == 2  # both drivers ran trials
    _agree_with_mlflow(tmp_path, study)
    _no_partial_checkpoint(tmp_path)


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(what)


def _stall_markers(stall_dir: Path, phase: str) -> list[tuple[int, int]]:
    """(worker pid, driver pid) of model workers now stalled in `phase` (they wrote a marker
    `<phase>-<worker pid>-<driver pid>`, see QTTS_TEST_STALL) whose worker still runs."""
    out = []
    for p in stall_dir.glob(f"{phase}-*"):
        _, pid, driver = p.name.split("-")
        if Path(f"/proc/{pid}").exists():
            out.append((int(pid), int(driver)))
    return out


def test_killed_workers_trials_are_requeued_once_and_their_keys_resume(tmp_path, tiny_model_dir):
    """3 drivers; kill -9 one mid-epoch and another mid checkpoint write; the third finishes the budget."""
    sweep = _sweep_file(tmp_path, 8)
    stall = tmp_path / "stall"
    stall.mkdir()
    env = {**os.environ, "QTTS_TEST_STALL": f"{stall}:1.5", "QTTS_LEASE_TTL_S": "6"}
    proc = subprocess.Popen(_cmd(tmp_path, tiny_model_dir, sweep, 3), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    killed = []
    try:
        _, driver = _wait_for(lambda: _stall_markers(stall, "epoch")[:1] and _stall_markers(stall, "epoch")[0],
                              600, "a worker mid-epoch")  # fmt: skip
        os.kill(driver, signal.SIGKILL)
        killed.append(driver)
        _, driver = _wait_for(
            lambda: (
                [m for m in _stall_markers(stall, "save") if m[1] not in killed][:1]
                and [m for m in _stall_markers(stall, "save") if m[1] not in killed][0]
            ),
            600,
            "a worker mid checkpoint write",
        )
        os.kill(driver, signal.SIGKILL)
        killed.append(driver)
        shutil.rmtree(stall)  # both kills done: the third driver finishes the budget without pauses
        out, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The launcher reports that drivers died; the study itself must be whole.
    study = load_existing_study("tiny", journal_storage(str(tmp_path)))
    trials = study.get_trials()
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")], out[-3000:]
    stale = stale_numbers(study)
    victims = [t for t in trials if t.user_attrs.get("driver_pid") in killed and t.state.name == "FAIL"]
    assert len(victims) == 2 and {t.number for t in victims} <= stale
    for v in victims:  # failed and re-queued exactly once
        assert sum(t.user_attrs.get("retry_of") == v.number for t in trials) == (1 if v.params else 0)
    assert 8 <= sum(budget_used(study)) <= 8 + 2
    summary = training_summary(study, tmp_path / "store")
    assert summary["trained_twice"] == 0
    # at most the two killed workers' epochs were lost (begun, never saved), and nothing else was computed twice
    assert summary["epochs_lost"] <= 2
    assert summary["epochs_computed"] <= summary["lower_bound"] + summary["epochs_lost"]
    _no_partial_checkpoint(tmp_path)
    for key_dir in (tmp_path / "store").iterdir():  # every lease released, or its holder is dead
        assert TrainingLease(key_dir, ttl=6).vacant()
    _agree_with_mlflow(tmp_path, study)
