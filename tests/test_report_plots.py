"""The report's pictures compare at a glance: numbers written for people, one colour scale and the search space's
axes across the lr panels, the promoted trial and the enqueued baseline marked. A real Optuna study, no model."""

from __future__ import annotations

import optuna
import yaml

from qtts_sweep.sweep.recovery import enqueue_point
from qtts_sweep.sweep.report import axis_limits, human, listening_page, marked_trials, plots, shared_color_range
from qtts_sweep.sweep.spec import load_spec


def test_numbers_are_written_for_people():
    assert [human(v) for v in (0.6000000000000001, 2e-06, 2e-05, 10.0, 0.35, None)] == [
        "0.6",
        "2e-6",
        "2e-5",
        "10",
        "0.35",
        "-",
    ]


DISTS = {
    "train.lr": optuna.distributions.CategoricalDistribution([2e-5, 2e-6]),
    "eval.epoch": optuna.distributions.IntDistribution(1, 10),
    "eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 1.0),
}


def _study(tmp_path):
    """Trial 0: the enqueued baseline (as a sweep enqueues it); trials 1-2 as the sampler would leave them."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    enqueue_point(study, {"train.lr": 2e-6, "eval.epoch": 10, "eval.lora_scale": 0.3}, baseline=True)
    study.tell(study.ask(DISTS), 0.2)
    for lr, epoch, scale, value in ((2e-6, 4, 0.6000000000000001, 0.9), (2e-5, 2, 1.0, 0.5)):
        params = {"train.lr": lr, "eval.epoch": epoch, "eval.lora_scale": scale}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=DISTS, value=value))
    return study


def test_plot_panels_share_colours_and_axes_and_mark_promoted_and_baseline(tmp_path):
    study = _study(tmp_path)
    bundle = tmp_path / "production" / "s" / "production.yaml"
    bundle.parent.mkdir(parents=True)
    bundle.write_text(yaml.safe_dump({"origin": {"study": "s", "trial": 1}}))
    assert marked_trials(study, tmp_path / "production") == {0: "baseline", 1: "promoted"}
    assert shared_color_range([0.2, 0.9, 0.5]) == (0.2, 0.9)
    spec = load_spec("default")
    lo, hi = axis_limits(spec, "eval.lora_scale")
    space = spec.space["eval.lora_scale"]
    assert lo < (space.low if space.low is not None else min(space.values())) and hi > 0.6  # the whole space
    made = plots(study, tmp_path, spec, tmp_path / "production")
    assert (tmp_path / "objective.png") in made


def test_listening_page_prints_rounded_parameters(tmp_path):
    study = _study(tmp_path)
    top = [{"number": 1, "value": 0.9, "params": study.trials[1].params, "eval_dir": None}]
    page = listening_page(study, top, None, [{"id": "a", "text": "Hi.", "audio": None}], tmp_path).read_text()
    assert "eval.lora_scale 0.6<" in page and "0.6000000000000001" not in page
    assert "train.lr 2e-6" in page
