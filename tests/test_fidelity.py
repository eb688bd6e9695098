"""Multi-fidelity over held-out lines: the chunk schedule, the sweep-file setting, the per-line relay into Optuna's
real WilcoxonPruner, and that a pruned (or cut-short) pair is never promoted. The last test runs a real sweep on
the tiny preset (slow)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from qtts_sweep.config.schema import ConfigError
from qtts_sweep.sweep import selection
from qtts_sweep.sweep.fidelity import Fidelity, LineRelay, chunk_ends, make_pruner
from qtts_sweep.sweep.spec import load_spec
from tests.helpers.sweeps import tiny_sweep

SCALE = optuna.distributions.FloatDistribution(0.0, 1.0)


def test_chunks_grow_by_step_in_whole_batches_and_end_at_every_line():
    assert chunk_ends(50, Fidelity(10, 10), 1) == [10, 20, 30, 40, 50]
    assert chunk_ends(50, Fidelity(10, 10), 4) == [12, 20, 32, 40, 50]  # a prefix never ends inside a batch
    assert chunk_ends(7, Fidelity(10, 10), 2) == [7]
    assert chunk_ends(25, Fidelity(5, 15), 1) == [5, 20, 25]


def test_the_wilcoxon_pruner_and_fidelity_go_together(tmp_path):
    def load(text: str):
        path = tmp_path / "s.yaml"
        path.write_text("space: {eval.lora_scale: {type: float, low: 0.1, high: 1.0}}\n" + text)
        return load_spec(str(path))

    assert load("pruner: wilcoxon\nfidelity: {min_lines: 4, step: 2}\n").fidelity == Fidelity(4, 2)
    for bad, words in [
        ("pruner: wilcoxon\n", "needs per-line chunks"),
        ("pruner: median\nfidelity: {min_lines: 4, step: 2}\n", "set pruner: wilcoxon"),
        ("pruner: wilcoxon\nfidelity: {min_lines: 0, step: 2}\n", "fidelity.min_lines"),
        ("pruner: wilcoxon\nfidelity: {lines: 4}\n", "unexpected keyword"),
    ]:
        with pytest.raises(ConfigError) as err:
            load(bad)
        assert words in str(err.value), (bad, str(err.value))


def _study():
    return optuna.create_study(direction="maximize", pruner=make_pruner({}, Fidelity(4, 4)))


def test_line_relay_reports_per_line_values_and_the_wilcoxon_pruner_stops_a_loser():
    study = _study()
    best = study.ask({"eval.lora_scale": SCALE})
    relay = LineRelay(best)
    values = [0.6, 0.7, 0.5, 0.65, 0.55, 0.62, 0.58, 0.66]
    assert relay.lines(8, 8, [[i, v] for i, v in enumerate(values)]) is False  # all lines: never asks to prune
    study.tell(best, sum(values) / len(values))
    loser = study.ask({"eval.lora_scale": SCALE})
    relay = LineRelay(loser)
    first = [[i, values[i] + (0.05 if i == 3 else -0.2)] for i in range(4)]
    assert relay.lines(4, 8, first) is False  # 3 of 4 lines worse: exact one-sided p = 2/16 > 0.1
    assert relay.lines(6, 8, [[i, values[i] - 0.2] for i in (4, 5)]) is True  # 5 of 6 worse: p = 2/64
    assert loser.user_attrs["lines_used"] == 6 and loser.user_attrs["lines_total"] == 8
    assert sorted(study.trials[1].intermediate_values) == list(range(6))  # steps are line indices only
    study.tell(loser, state=optuna.trial.TrialState.PRUNED)
    close = study.ask({"eval.lora_scale": SCALE})
    assert LineRelay(close).lines(6, 8, [[i, values[i] + (0.01 if i % 2 else -0.01)] for i in range(6)]) is False


def test_a_pruned_or_cut_short_pair_is_never_promoted():
    study = _study()

    def add(value, state, lines, scale):
        attrs = {"lines_used": lines, "lines_total": 8}
        ivs = {i: (value if value is not None else 0.99) for i in range(lines)}
        study.add_trial(
            optuna.trial.create_trial(
                params={"eval.lora_scale": scale},
                distributions={"eval.lora_scale": SCALE},
                value=value,
                state=state,
                user_attrs=attrs,
                intermediate_values=ivs,
            )
        )

    add(0.5, optuna.trial.TrialState.COMPLETE, 8, 0.3)  # scored on every line
    add(None, optuna.trial.TrialState.PRUNED, 4, 0.4)  # pruned with high early lines
    add(0.9, optuna.trial.TrialState.COMPLETE, 4, 0.5)  # complete but cut short some other way
    assert selection.select_trial(study).number == 0
    assert [t.number for t in selection.top_trials(study, 5)] == [0]
    assert selection.best_summary(study)["number"] == 0
    with pytest.raises(selection.SelectionError, match="only COMPLETE trials can be promoted"):
        selection.select_trial(study, trial_number=1)


@pytest.mark.slow
def test_a_wilcoxon_sweep_scores_lines_in_chunks_and_promotes_only_full_trials(tmp_path, tiny_model_dir):
    spec = load_spec("tiny")
    # eval.lora_scale from 0.2 (near the base model) to 1.0 changes teacher-forced accuracy line by line; the
    # threshold 1.0 prunes any trial not better than the best on every line so far (the mechanism, not tuning).
    driver = tiny_sweep(
        tmp_path,
        tiny_model_dir,
        n_trials=5,
        extra=["eval.max_lines=4", "eval.batch_size=2"],
        pruner="wilcoxon",
        pruner_kwargs={"p_threshold": 1.0, "n_startup_steps": 2},
        fidelity=Fidelity(2, 2),
        enqueue=[{"train.lr": 3e-3, "eval.epoch": 4, "eval.lora_scale": 1.0}],
        space={**spec.space, "eval.lora_scale": dataclasses.replace(spec.space["eval.lora_scale"], step=None)},
    )
    outcome = driver.run()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = [t for t in study.trials if t.state.is_finished()]
    assert outcome.failed == 0 and len(trials) == 5
    for t in trials:
        assert t.user_attrs["lines_total"] == 4
        assert set(t.intermediate_values) == set(range(t.user_attrs["lines_used"]))  # line steps, no epoch steps
        if t.state.name == "COMPLETE":
            assert t.user_attrs["lines_used"] == 4
            mean = sum(t.intermediate_values.values()) / 4
            assert t.value == pytest.approx(mean)  # the objective is the mean per-line score
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["lines_used"] == 2 for t in pruned)
    assert selection.select_trial(study).number not in {t.number for t in pruned}
    from qtts_sweep.sweep.report import format_table

    assert "lines scored per trial" in format_table(study) and f"#{pruned[0].number}:2/4" in format_table(study)
