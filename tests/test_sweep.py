"""End-to-end sweeps on the tiny preset: real Optuna storage (SQLite), real MLflow store, real worker process."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from qtts_sweep.sweep.recovery import budget_used, stale_numbers
from qtts_sweep.sweep.report import format_table, objective_figure, plots, training_summary
from qtts_sweep.sweep.spec import SWEEPS_DIR, load_spec
from qtts_sweep.sweep.storage import make_storage
from qtts_sweep.tracking.mlflow_tracker import STUDY_PREFIX
from tests.helpers.sweeps import CHEAP, tiny_paths, tiny_sweep

pytestmark = pytest.mark.slow


def _paths(tmp: Path, tiny_model_dir: Path) -> list[str]:
    return tiny_paths(tmp, tiny_model_dir)


def _driver(tmp, tiny_model_dir, name="tiny", n_trials=4, extra=(), **spec_changes):
    return tiny_sweep(tmp, tiny_model_dir, name, n_trials, extra, **spec_changes)


def _study(tmp: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=make_storage(f"sqlite:///{tmp / 'optuna.db'}"))


BASELINE = {"train.lr": 3e-3, "eval.epoch": 4, "eval.lora_scale": 1.0}  # the tiny sweep's enqueued point
# Same training key as the baseline at an earlier epoch: stored by trial 0, so trial 1 must train nothing.
SAME_KEY = {"train.lr": 3e-3, "eval.epoch": 2, "eval.lora_scale": 0.6}


def test_sweep_runs_trials_reuses_checkpoints_logs_mlflow_and_resumes(tmp_path, tiny_model_dir):
    outcome = _driver(tmp_path, tiny_model_dir, n_trials=4, enqueue=[BASELINE, SAME_KEY]).run()
    assert outcome.failed == 0 and outcome.completed + outcome.pruned == 4 and outcome.completed >= 2
    study = _study(tmp_path)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert trials[0].params == BASELINE and trials[1].params == SAME_KEY
    # checkpoint reuse: trial 1 shares trial 0's training key and trains no epoch of its own
    assert trials[1].user_attrs["training_key"] == trials[0].user_attrs["training_key"]
    assert trials[0].user_attrs["trained_epochs"] == [1, 2, 3, 4] and trials[0].user_attrs["reused"] is False
    assert trials[1].user_attrs["trained_epochs"] == [] and trials[1].user_attrs["reused"] is True
    for t in trials:  # any trial on an already-trained key trains only the epochs beyond what is stored
        earlier = [u for u in trials[: t.number] if u.user_attrs.get("training_key") == t.user_attrs["training_key"]]
        stored = max([e for u in earlier for e in u.user_attrs["trained_epochs"]] or [0])
        assert t.user_attrs["trained_epochs"] == list(range(stored + 1, t.user_attrs["epoch_reached"] + 1))
    summary = training_summary(study)
    assert summary["epochs_trained"] == summary["lower_bound"] and summary["trained_twice"] == 0
    assert summary["epochs_trained"] == sum(len(t.user_attrs["trained_epochs"]) for t in trials)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    children = client.search_runs([exp.experiment_id], "tags.qtts_role = 'trial'")
    assert len(children) == 4 and all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in children)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert done  # the MLflow checks below run on at least one completed trial
    for t in done:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna_trial_number"] == str(t.number)  # linked both ways
        assert "objective" in run.data.metrics and "talker_acc" in run.data.metrics
        assert run.data.params["training_key"] == t.user_attrs["training_key"]
        assert run.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
        wavs = [a.path for a in client.list_artifacts(run.info.run_id, "wavs")]
        assert wavs and all(p.endswith(".wav") for p in wavs)
        training = client.get_run(run.data.tags["training_run_id"])
        assert training.data.tags["training_key"] == t.user_attrs["training_key"]
    # Re-running the same command: the budget is a total, nothing new runs, the same parent run is used.
    again = _driver(tmp_path, tiny_model_dir, n_trials=4, enqueue=[BASELINE, SAME_KEY]).run()
    assert again.trials_run == [] and again.parent_run_id == outcome.parent_run_id
    # A bigger budget continues the numbering; the enqueued baseline is not added twice.
    more = _driver(tmp_path, tiny_model_dir, n_trials=6, enqueue=[BASELINE, SAME_KEY]).run()
    assert more.trials_run == [4, 5]
    enqueued = [t.user_attrs.get("point") for t in _study(tmp_path).get_trials()]
    assert enqueued.count(BASELINE) == 1 and enqueued.count(SAME_KEY) == 1
    assert sum(budget_used(_study(tmp_path))) == 6


def test_a_crashing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("QTTS_TEST_CRASH", "1:segfault,2:raise,3:leaselost")
    driver = _driver(tmp_path, tiny_model_dir, n_trials=4)
    outcome = driver.run()
    trials = {t.number: t for t in _study(tmp_path).get_trials()}
    assert trials[1].state.name == "FAIL" and "SIGSEGV" in trials[1].user_attrs["fail_reason"]
    assert trials[2].state.name == "FAIL" and "injected failure" in trials[2].user_attrs["fail_reason"]
    # a trial whose worker lost its training lease is not its own failure: re-queued once, not counted
    assert trials[3].state.name == "FAIL" and "LeaseLost" in trials[3].user_attrs["fail_reason"]
    assert trials[4].user_attrs.get("retry_of") == 3 and trials[4].params == trials[3].params
    assert trials[4].state.name in ("COMPLETE", "PRUNED")
    assert len(trials) == 5
    assert driver.worker.starts >= 2  # restarted after the segfault
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    failed = client.get_run(trials[1].user_attrs["mlflow_run_id"])
    assert failed.info.status == "FAILED" and "SIGSEGV" in failed.data.tags["fail_reason"]
    assert outcome.failed == 2


def test_failure_rate_cap_stops_a_broken_sweep(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("QTTS_TEST_CRASH", ",".join(f"{i}:raise" for i in range(10)))
    outcome = _driver(tmp_path, tiny_model_dir, n_trials=10, min_trials_for_failure_cap=3).run()
    assert outcome.stopped_reason and "max_failure_rate" in outcome.stopped_reason
    assert outcome.failed == 3 and outcome.completed == 0


def _wait_for(predicate, timeout: float = 300) -> None:
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.5)


def _states(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return [r[0] for r in con.execute("select state from trials order by number")]
        except sqlite3.OperationalError:
            return []


def _terminal_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_resume_after_interrupt_or_kill_mid_trial(tmp_path, tiny_model_dir, sig, capsys):
    db = tmp_path / "optuna.db"
    # the shipped tiny sweep with a budget of 3, and a second enqueued point on another training key, so that
    # trial 1 certainly trains (a sampled point may reuse trial 0's epochs and finish within a poll interval)
    text = Path(load_spec("tiny").source).read_text().replace("n_trials: 12", "n_trials: 3")
    enqueue = "  - {train.lr: 3.0e-3, eval.epoch: 4, eval.lora_scale: 1.0}\n"
    assert enqueue in text
    sweep_file = tmp_path / "tiny3.yaml"
    second = "  - {train.lr: 1.0e-3, eval.epoch: 2, eval.lora_scale: 0.6}\n"
    sweep_file.write_text(text.replace(enqueue, enqueue + second))
    args = [sys.executable, "-m", "qtts_sweep.cli", "sweep", str(sweep_file), *CHEAP, *_paths(tmp_path, tiny_model_dir)]
    stall = tmp_path / "stall"
    # the worker writes a marker and pauses mid-epoch and mid-save (QTTS_TEST_STALL) once the folder exists (armed
    # after trial 0): a signal sent while a marker exists reaches a trial that is certainly RUNNING, however loaded
    # the machine is
    env = {**os.environ, "QTTS_TEST_STALL": f"{stall}:1"}
    log = tmp_path / "first-run.log"
    # as from a terminal: SIGINT at its default (Python's KeyboardInterrupt), whatever this pytest process inherited
    # or a library in it changed (a child inherits an ignored or blocked SIGINT, and Python then never raises)
    proc = subprocess.Popen(
        args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, preexec_fn=_terminal_signals
    )
    try:
        # Let one trial finish, then stop the driver while the next one is RUNNING, mid-epoch.
        _wait_for(lambda: _states(db).count("COMPLETE") + _states(db).count("PRUNED") >= 1)
        stall.mkdir()
        _wait_for(lambda: _states(db)[-1:] == ["RUNNING"] and any(stall.glob("epoch-*")))
        proc.send_signal(sig)
        proc.wait(timeout=120)
        assert proc.returncode != 0, f"the first run finished before or despite the signal:\n{log.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        assert "RUNNING" not in _states(db)  # Ctrl-C leaves nothing running
    # the same command again, in this process (its worker forks from this process's fork server: no second start-up
    # of the whole stack; the first run had to be a process of its own, to be signalled)
    from qtts_sweep.cli import main

    code = main(args[3:])
    rerun = capsys.readouterr().out
    assert code == 0, rerun[-3000:]
    study = _study(tmp_path)
    assert sum(budget_used(study)) == 3  # budget exact
    assert not [t for t in study.get_trials() if t.state.name in ("RUNNING", "WAITING")]
    stale = stale_numbers(study)
    stopped = [t for t in study.get_trials() if t.number in stale or t.user_attrs.get("interrupted")]
    seen = [(t.number, t.state.name, sorted(t.user_attrs)) for t in study.get_trials()]
    assert len(stopped) == 1, f"{seen}\nfirst run:\n{log.read_text()[-4000:]}\nrerun:\n{rerun[-3000:]}"
    requeued = [t for t in study.get_trials() if "retry_of" in t.user_attrs]
    # the stopped trial runs again once (killed before it had parameters: nothing to re-run)
    assert len(requeued) == (1 if stopped[0].params else 0)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and tags.qtts_role = 'trial'")


def test_median_pruner_stops_a_bad_lr_early_and_spares_the_good_ones(tmp_path, tiny_model_dir):
    enqueue = [
        {"train.lr": 3e-3, "eval.epoch": 4, "eval.lora_scale": 1.0},
        {"train.lr": 1e-3, "eval.epoch": 4, "eval.lora_scale": 1.0},
        {"train.lr": 3e-7, "eval.epoch": 4, "eval.lora_scale": 1.0},
    ]  # barely moves: worse at every epoch
    spec_space = load_spec("tiny").space
    spec_space = {**spec_space, "train.lr": dataclasses.replace(spec_space["train.lr"], choices=[3e-3, 1e-3, 3e-7])}
    driver = _driver(
        tmp_path,
        tiny_model_dir,
        n_trials=3,
        enqueue=enqueue,
        space=spec_space,
        pruner_kwargs={"n_startup_trials": 2, "n_warmup_steps": 1},
    )
    driver.run()
    trials = _study(tmp_path).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = trials[2]
    # its last real step; the NaN step after it keeps the pruned trial valueless (no -val_loss on the objective axis)
    last_step = max(s for s, v in pruned.intermediate_values.items() if math.isfinite(v))
    assert math.isnan(pruned.intermediate_values[last_step + 1]) and pruned.value is None
    assert last_step < 4  # stopped before its last epoch
    # the epochs it trained before pruning are stored and reusable
    from qtts_sweep.train.store import CheckpointStore

    keys = {t.user_attrs.get("training_key") for t in trials[:2]}
    store = CheckpointStore(tmp_path / "store")
    other = [k.name for k in (tmp_path / "store").iterdir() if k.name not in keys]
    assert len(other) == 1 and store.epochs(other[0]) == list(range(1, last_step + 1))


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
def test_every_shipped_sweep_runs_two_trials_on_the_tiny_preset(tmp_path, tiny_model_dir, name):
    # Real-model sweeps run on the tiny preset with a 10-epoch horizon of 1-step epochs.
    extra = (
        []
        if name == "tiny"
        else ["model=tiny", "train.max_epochs=10", "train.epochs=10", "eval.epoch=10", "train.max_steps_per_epoch=1"]
    )
    outcome = _driver(tmp_path, tiny_model_dir, name=name, n_trials=2, extra=extra).run()
    assert outcome.completed + outcome.pruned == 2 and outcome.failed == 0
    # the report labels what this sweep searched: every parameter in the table, the plot's axes and panels
    spec = load_spec(name)
    study = _study(tmp_path, spec.study_name)
    header = format_table(study).splitlines()[1].split()
    assert set(spec.space) <= set(header), (spec.space, header)
    if name == "lora_rank":
        fig = objective_figure(study)
        labels = [(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes if ax.get_title()]
        assert labels and all(lab[:2] == ("train.lr", "eval.lora_scale") for lab in labels), labels
        assert all(lab[2].startswith("lora.r ") for lab in labels), labels
        assert tmp_path / "objective.png" in plots(study, tmp_path)
