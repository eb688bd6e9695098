"""Sweep files as data: every shipped file validates and plans; sampling and ask/tell order (no model)."""

from __future__ import annotations

import optuna
import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.config.schema import ConfigError
from qtts_sweep.sweep.launch import plan_sweep
from qtts_sweep.sweep.recovery import budget_used, recover_stale
from qtts_sweep.sweep.search import make_sampler
from qtts_sweep.sweep.spec import SWEEPS_DIR, load_spec, overrides_for, suggest

SHIPPED = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def test_the_four_required_sweeps_ship():
    assert {"default", "grid", "scale_only", "tiny"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_sweep_file_validates_and_plans(name):
    spec = load_spec(name)
    cfg = load_config(spec.base, check_model=False)  # the hub model is not cached on a test machine
    spec = load_spec(name, cfg=cfg)
    text = plan_sweep(name, [])
    assert "distinct training keys" in text and "disk" in text and "epochs to train" in text
    for point in spec.enqueue:  # enqueued baselines are valid points of the space
        assert suggest(optuna.trial.FixedTrial(point), spec) == point


def test_default_enqueues_the_seed_point_and_the_official_lr():
    spec = load_spec("default")
    assert {"train.lr": 2e-6, "eval.epoch": 10, "eval.lora_scale": 0.3} in spec.enqueue
    assert any(p["train.lr"] == 2e-5 for p in spec.enqueue)
    grid = load_spec("grid")
    assert grid.space["eval.lora_scale"].choices == [0.2, 0.3, 0.35, 0.5, 1.0]
    assert grid.space["train.lr"].choices == [2e-5, 2e-6]


def test_plan_refuses_an_epoch_range_beyond_the_horizon():
    with pytest.raises(ConfigError, match=r"must be <= train.max_epochs \(3\)"):
        plan_sweep("tiny", ["train.max_epochs=3", "train.epochs=3", "eval.epoch=3"])


def test_bad_sweep_files_report_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "n_trials: 0\nsampler: annealing\npruner: median\nobjective: multi\nobjectives: [a, b]\n"
        "directions: [maximize]\nspace:\n"
        "  train.lr: {type: float, low: 1.0e-6, high: 1.0e-3, log: true, step: 1.0e-6}\n"
        "  lora.rank: {type: categorical, choices: [8]}\n  paths.runs_dir: {type: categorical, choices: [x]}\n"
        "  eval.epoch: {type: int, low: 5, high: 2}\n"
        "enqueue:\n  - {train.lr: 1.0e-5}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_spec(str(bad))
    text = str(err.value)
    for needle in (
        "log=True with a step",
        "is not a config leaf",
        "did you mean `lora.r`",
        "can be searched",
        "low <= high",
        "must be one of",
        "n_trials",
        "one direction per objective",
        "cannot prune multi-objective",
        "exactly the searched",
    ):
        assert needle in text, needle


def test_suggest_uses_optunas_api_and_overrides_are_hydra_syntax():
    spec = load_spec("tiny")
    point = {"train.lr": 1e-3, "eval.epoch": 2, "eval.lora_scale": 0.6}
    assert suggest(optuna.trial.FixedTrial(point), spec) == point
    assert overrides_for(point) == ["eval.epoch=2", "eval.lora_scale=0.6", "train.lr=0.001"]


def _run_study(tmp_path, name: str, early_values: list[float]) -> list[dict]:
    spec = load_spec("tiny")
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / name}.db", sampler=make_sampler(spec), direction="maximize"
    )
    seen = []
    for k in range(8):
        trial = study.ask()
        params = suggest(trial, spec)
        seen.append(params)
        study.tell(trial, early_values[k] if k < len(early_values) else params["eval.lora_scale"])
    return seen


def test_every_ask_sees_the_tells_before_it(tmp_path):
    # Same seed, different results for the first trials: TPE's later suggestions must differ (ask after tell).
    a = _run_study(tmp_path, "a", [0.0, 1.0, 0.0, 1.0, 0.0])
    b = _run_study(tmp_path, "b", [1.0, 0.0, 1.0, 0.0, 1.0])
    assert a[:4] == b[:4]  # the random start-up trials only depend on the seed
    assert a[4:] != b[4:]


def test_budget_counts_finished_trials_except_requeued_ones(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}")
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(t, 0.5 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    study.enqueue_trial({"x": 0.5}, user_attrs={"retry_of": 2})
    assert budget_used(study) == (1, 1, 0)


def test_an_untagged_trial_of_a_dead_driver_is_failed_and_not_counted(tmp_path):
    import socket
    import subprocess
    import sys

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    study.set_user_attr(f"driver:{socket.gethostname()}:{dead.pid}", 0.0)
    orphan = study.ask()  # the driver died between ask() and tagging the trial
    tagged = study.ask()
    tagged.set_user_attr("driver_host", socket.gethostname())
    tagged.set_user_attr("driver_pid", dead.pid)
    tagged.suggest_float("x", 0, 1)
    assert sorted(recover_stale(study)) == [orphan.number, tagged.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[orphan.number] == states[tagged.number] == "FAIL"
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert [t.user_attrs["retry_of"] for t in waiting] == [tagged.number]  # only the one with params re-runs
    assert budget_used(study) == (0, 0, 0)
