"""Warm start across voices on real Optuna storage (SQLite): the top points of an earlier study are enqueued once,
after the published defaults, tagged, restricted to this sweep's space; the sweep file's setting is validated."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from qtts_sweep.config.schema import ConfigError
from qtts_sweep.sweep.search import open_study
from qtts_sweep.sweep.spec import load_spec
from qtts_sweep.sweep.storage import make_storage
from qtts_sweep.sweep.warm_start import ATTR, DONE_ATTR, enqueue_warm_start
from qtts_sweep.util.problems import ValidationError

DIST = {
    "train.lr": optuna.distributions.CategoricalDistribution([1e-6, 2e-6, 5e-6]),
    "eval.epoch": optuna.distributions.IntDistribution(1, 10),
    "eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 1.0),
}


def _earlier(url: str, name: str, points: list[tuple[dict, float]]) -> None:
    study = optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize")
    for params, value in points:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=DIST, value=value))


def _spec(tmp_path, **changes):
    spec = load_spec("default")
    space = {**spec.space, "eval.lora_scale": dataclasses.replace(spec.space["eval.lora_scale"], step=None)}
    return dataclasses.replace(spec, storage=f"sqlite:///{tmp_path / 'new.db'}", space=space, **changes)


def test_top_points_of_an_earlier_study_are_enqueued_once_after_the_defaults(tmp_path):
    old = f"sqlite:///{tmp_path / 'old.db'}"
    _earlier(
        old,
        "voice_a",
        [
            ({"train.lr": 2e-6, "eval.epoch": 9, "eval.lora_scale": 0.34}, 0.80),
            ({"train.lr": 1e-6, "eval.epoch": 10, "eval.lora_scale": 0.45}, 0.75),
            ({"train.lr": 5e-6, "eval.epoch": 3, "eval.lora_scale": 0.9}, 0.20),
            ({"train.lr": 2e-6, "eval.epoch": 10, "eval.lora_scale": 0.05}, 0.78),  # below this sweep's scale range
        ],
    )
    spec = _spec(tmp_path, warm_start=[f"{old}#voice_a"], warm_start_top_k=3)
    study = open_study(spec, make_storage(spec.storage))
    for point in spec.enqueue:  # what the driver's prepare does first
        study.enqueue_trial(point, skip_if_exists=True)
    lines = enqueue_warm_start(study, spec, str(tmp_path))
    assert "enqueued 2 point(s) of `voice_a`" in lines[0] and "trial 3: outside this space" in lines[1]
    again = enqueue_warm_start(open_study(spec, make_storage(spec.storage)), spec, str(tmp_path))
    assert again == []  # a resumed sweep (or a second driver) enqueues nothing again
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == len(spec.enqueue) + 2
    warm = [t for t in waiting if ATTR in t.user_attrs]
    assert [t.user_attrs[ATTR] for t in warm] == [f"{old}#voice_a trial 0", f"{old}#voice_a trial 1"]
    assert all(ATTR not in t.user_attrs for t in waiting[: len(spec.enqueue)])  # the defaults come first
    assert study.user_attrs[DONE_ATTR] == [f"{old}#voice_a"]
    # the first warm point is asked after the defaults, with its exact values
    for _ in spec.enqueue:
        study.tell(study.ask(), 0.5)
    trial = study.ask()
    assert trial.user_attrs[ATTR].endswith("trial 0")
    assert trial.suggest_float("eval.lora_scale", 0.2, 1.0) == pytest.approx(0.34)


def test_a_study_name_is_found_in_the_default_storage_and_a_missing_one_is_named(tmp_path):
    _earlier(
        f"sqlite:///{tmp_path / 'optuna.db'}",
        "voice_b",
        [({"train.lr": 2e-6, "eval.epoch": 10, "eval.lora_scale": 0.3}, 0.7)],
    )
    spec = _spec(tmp_path, warm_start=["voice_b"])
    study = open_study(spec, make_storage(spec.storage))
    assert "1 point(s) of `voice_b`" in enqueue_warm_start(study, spec, str(tmp_path))[0]
    with pytest.raises(ValidationError, match="no such study"):
        enqueue_warm_start(study, dataclasses.replace(spec, warm_start=["nobody"]), str(tmp_path))


def test_the_warm_start_setting_is_validated(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space: {eval.lora_scale: {type: float, low: 0.1, high: 1.0}}\nwarm_start: voice_a\n")
    with pytest.raises(ConfigError, match="must be a list of study names or URLs"):
        load_spec(str(path))
