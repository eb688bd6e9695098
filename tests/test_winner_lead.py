"""The winner's lead, on plain numbers through the real selection and report code (a real in-memory Optuna study,
real result.json files): the lead is measured on the objective the winner was chosen by, whole lines are
resampled, a worse trial is reported as behind, the runner-up is another (checkpoint, scale) pair, promotion
uses the sweep's own tie-break and respects constraints, the report shows the trial promote picks and says when
there are too few lines to separate anything."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from qtts_sweep.config.schema import ObjectiveConfig
from qtts_sweep.metrics.objective import LineObjective, aggregate_lines, composite_score
from qtts_sweep.metrics.paired import Candidate, choose, paired_difference
from qtts_sweep.sweep import selection
from qtts_sweep.sweep.report import format_table, winner_report

WEIGHTS = ObjectiveConfig().objective_weights()
DIST = {
    "eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 1.0),
    "eval.epoch": optuna.distributions.IntDistribution(1, 10),
}


def rows_for(acc: np.ndarray, seeds: int = 1) -> list[dict]:
    """Per-(line, seed) rows: acc[line * seeds + seed] as both accuracies (every other weighted term missing)."""
    return [
        {"id": f"l{i // seeds:02d}", "seed": i % seeds, "metrics": {"talker_acc": float(a), "code_acc": float(a)}}
        for i, a in enumerate(acc)
    ]


def objective_of(rows: list[dict]) -> float:
    """What scoring.evaluate stores as the trial's value."""
    return composite_score(aggregate_lines([r["metrics"] for r in rows]), WEIGHTS)


class Study:
    def __init__(self, tmp_path, objective: dict | None = None):
        self.tmp = tmp_path
        self.study = optuna.create_study(direction="maximize", study_name="lead")
        if objective is not None:
            self.study.set_user_attr(selection.OBJECTIVE_ATTR, objective)

    def add(self, rows, scale, epoch=1, checkpoint="ckpt-a", constraints=(0.0,)) -> int:
        n = len(self.study.trials)
        d = self.tmp / f"eval-{n}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"per_line": rows, "scale": scale}))
        folder = self.tmp / "store" / checkpoint / f"epoch-{epoch}"  # a checkpoint folder, as a sweep records it
        attrs = {"eval_dir": str(d), "checkpoint": str(folder), "constraints": list(constraints), "summary": {}}
        self.study.add_trial(
            optuna.trial.create_trial(
                params={"eval.lora_scale": scale, "eval.epoch": epoch},
                distributions=DIST,
                value=objective_of(rows),
                user_attrs=attrs,
            )
        )
        return n


def test_the_line_objective_is_the_trials_own_value():
    rng = np.random.default_rng(0)
    rows = rows_for(rng.uniform(0.2, 0.9, 12), seeds=3)
    rows[4]["metrics"]["talker_acc"] = float("nan")  # counts as worst, as in aggregate_lines
    ceiling = [{"id": f"l{i:02d}", "metrics": {"talker_acc": 0.9, "code_acc": 0.8}} for i in range(4)]
    lobj = LineObjective(rows, WEIGHTS, ceiling)
    want = composite_score(
        aggregate_lines([r["metrics"] for r in rows]), WEIGHTS, None, aggregate_lines([c["metrics"] for c in ceiling])
    )
    assert lobj.on(lobj.lines, np.ones((1, 4)))[0] == pytest.approx(want, abs=1e-12)
    # drawing line l00 twice and l03 never is the objective of that multiset of rows
    twice = [r for r in rows if r["id"] == "l00"] + [r for r in rows if r["id"] != "l03"]
    ceil2 = [ceiling[0]] + [c for c in ceiling if c["id"] != "l03"]
    want2 = composite_score(
        aggregate_lines([r["metrics"] for r in twice]), WEIGHTS, None, aggregate_lines([c["metrics"] for c in ceil2])
    )
    assert lobj.on(lobj.lines, np.array([[2.0, 1.0, 1.0, 0.0]]))[0] == pytest.approx(want2, abs=1e-12)


def test_a_batch_of_resamples_scores_each_one_as_alone():
    """`on` scores each distinct resample once and remembers the last batch: every row of a batch with repeats
    (and the same batch asked again, and a different one after it) is what that row alone scores."""
    rng = np.random.default_rng(2)
    rows = rows_for(rng.uniform(0.2, 0.9, 12), seeds=3)
    ceiling = [{"id": f"l{i:02d}", "metrics": {"talker_acc": 0.9, "code_acc": 0.8}} for i in range(4)]
    lobj = LineObjective(rows, WEIGHTS, ceiling)
    batch = rng.integers(0, 3, size=(40, 4)).astype(float)
    batch[batch.sum(axis=1) == 0, 0] = 1.0  # every resample draws a line
    alone = np.array([LineObjective(rows, WEIGHTS, ceiling).on(lobj.lines, row[None, :])[0] for row in batch])
    assert len({tuple(r) for r in batch}) < len(batch)  # repeats, as a bootstrap of few lines draws
    for counts in (batch, batch, batch[::-1]):
        np.testing.assert_allclose(lobj.on(lobj.lines, counts), alone if counts is batch else alone[::-1], atol=1e-12)


def test_the_lead_is_the_difference_of_objectives_not_of_line_means(tmp_path):
    """With ceiling-relative, capped terms the mean of per-line scores is not the objective; the lead is."""
    rng = np.random.default_rng(1)
    s = Study(tmp_path)
    a = s.add(rows_for(rng.uniform(0.3, 0.9, 8)), 0.3, checkpoint="ckpt-a")
    b = s.add(rows_for(rng.uniform(0.3, 0.9, 8)), 0.5, checkpoint="ckpt-b")
    ca, cb = (selection.candidate(t, ObjectiveConfig()) for t in s.study.trials)
    d = paired_difference(ca, cb)
    assert d.mean == pytest.approx(s.study.trials[a].value - s.study.trials[b].value, abs=1e-12)
    assert (d.n, d.pairs) == (8, 8)


def test_seeds_of_one_line_are_resampled_together():
    """Two lines x 20 identical seeds: 40 (line, seed) pairs but two independent observations. Resampling pairs
    called this a lead outside noise; resampling lines says it is a tie and too thin to tell."""
    seeds = 20
    base = {(f"l{i}", s): 0.5 for i in range(2) for s in range(seeds)}
    other = {(line, s): v + (0.1 if line == "l0" else -0.05) for (line, s), v in base.items()}
    d = paired_difference(other, base)
    assert (d.n, d.pairs) == (2, 40) and d.tie and d.thin
    assert "too few lines" in d.describe() and "outside noise" not in d.describe()


def test_a_significantly_worse_trial_is_reported_as_behind_and_never_chosen(tmp_path):
    """Constrained single objective: the feasible trial wins over an infeasible one that scores higher, and the
    lead over it is reported as behind outside noise, not as a lead."""
    rng = np.random.default_rng(2)
    good = rng.uniform(0.5, 0.8, 10)
    s = Study(tmp_path)
    feasible = s.add(rows_for(good), 0.3, checkpoint="ckpt-a")
    infeasible = s.add(rows_for(np.clip(good + 0.15, 0, 1)), 0.5, checkpoint="ckpt-b", constraints=(0.2,))
    assert selection.select_trial(s.study).number == feasible
    assert [t.number for t in selection.top_trials(s.study, 2)] == [feasible, infeasible]
    text, data = winner_report(s.study, _cfg(), None)
    lead = data["leads"]["runner_up"]
    assert data["chosen"] == feasible and data["runner_up"] == infeasible and data["infeasible"] == [infeasible]
    assert lead["behind"] and lead["hi"] < 0 and not lead["tie"]
    assert "behind, outside noise" in text and "lead outside noise" not in text


def test_runner_up_is_another_pair_not_a_repeat_of_the_winner(tmp_path):
    rng = np.random.default_rng(3)
    acc = rng.uniform(0.4, 0.8, 10)
    s = Study(tmp_path)
    win = s.add(rows_for(acc + 0.1), 0.3, checkpoint="ckpt-a")
    repeat = s.add(rows_for(acc + 0.0999), 0.3, checkpoint="ckpt-a")  # a retry of the same (checkpoint, scale)
    other = s.add(rows_for(acc), 0.3, checkpoint="ckpt-b")  # a distinct checkpoint that really is worse
    text, data = winner_report(s.study, _cfg(), None)
    assert data["best"] == win and data["runner_up"] == other and data["repeats"] == [repeat]
    assert data["leads"]["runner_up"]["lo"] > 0 and "lead outside noise" in text


def test_promotion_uses_the_sweeps_tie_break_and_the_report_shows_its_pick(tmp_path):
    """A real tie (different checkpoints, noise-level differences). The sweep recorded tie_break=[earlier_trial];
    the command line's default (lower_scale first) would pick another trial."""
    rng = np.random.default_rng(4)
    acc = rng.uniform(0.4, 0.8, 12)
    s = Study(tmp_path, objective={"tie_break": ["earlier_trial"]})
    first = s.add(rows_for(acc - 0.01 + rng.normal(0, 0.02, 12)), 0.9, checkpoint="ckpt-a")
    s.add(rows_for(acc + rng.normal(0, 0.02, 12)), 0.5, checkpoint="ckpt-b")
    low = s.add(rows_for(acc + rng.normal(0, 0.02, 12)), 0.1, checkpoint="ckpt-c")
    best = selection.select_trial(s.study).number
    assert best != first  # else the rule decides nothing
    trial, why = selection.select_for_promotion(s.study, ObjectiveConfig())  # the CLI default: lower_scale first
    assert trial.number == first and "lower trial number" in why
    s.study.set_user_attr(selection.OBJECTIVE_ATTR, {"tie_break": ["lower_scale"]})
    assert selection.select_for_promotion(s.study, ObjectiveConfig())[0].number == low
    # the pick is in the report even when it is not among the top k
    s.study.set_user_attr(selection.OBJECTIVE_ATTR, {"tie_break": ["earlier_trial"]})
    table = format_table(s.study, k=1)
    assert f"\n{'*' + str(first):>9}" in table and f"promote picks trial {first}" in table


def test_the_report_says_when_the_evidence_is_too_thin(tmp_path):
    s = Study(tmp_path)
    s.add(rows_for(np.array([0.9, 0.8, 0.9, 0.85]), seeds=2), 0.3, checkpoint="ckpt-a")  # 2 lines x 2 seeds
    s.add(rows_for(np.array([0.2, 0.3, 0.25, 0.2]), seeds=2), 0.5, checkpoint="ckpt-b")
    text, data = winner_report(s.study, _cfg(), None)
    assert data["thin"] and "evidence too thin: 2 held-out line(s)" in text


def test_choose_without_statistics_still_pairs_by_lines():
    same = {(f"l{i}", 0): 0.5 for i in range(8)}
    v = choose([Candidate(0, 0.5, {}, same, pair=("c", 0.3)), Candidate(1, 0.5, {}, same, pair=("c", 0.3))])
    assert v.repeats == [1] and v.runner_up is None and v.leads == {}


def _cfg():
    from qtts_sweep.config.loader import load_config

    return load_config(["model=tiny", "tracking=none"], check_model=False)


def test_a_verdict_asked_again_computes_only_what_changed(tmp_path, monkeypatch):
    """The progress line asks for the verdict after every trial: leads already measured are reused while their
    two results are unchanged; a new trial's lead, and the lead of a result that grew, are measured afresh."""
    from qtts_sweep.metrics import paired

    rng = np.random.default_rng(3)
    s = Study(tmp_path)
    for i in range(4):
        s.add(rows_for(rng.uniform(0.3 + 0.1 * i, 0.9, 6)), 0.1 * (i + 1), checkpoint=f"ckpt-{i}")
    calls = []
    real = paired.paired_difference
    monkeypatch.setattr(paired, "paired_difference", lambda a, b, *k, **kw: calls.append(b.number) or real(a, b))
    first = selection.paired_verdict(s.study, ObjectiveConfig())
    assert sorted(calls) == sorted(n for n in first.leads)
    calls.clear()
    new = s.add(rows_for(rng.uniform(0.1, 0.3, 6)), 0.9, checkpoint="ckpt-new")  # clearly behind the best
    second = selection.paired_verdict(s.study, ObjectiveConfig())
    assert calls == [new] and second.best.number == first.best.number
    assert {n: second.leads[n] for n in first.leads} == first.leads
    calls.clear()
    other = next(n for n in first.leads)
    grown = rows_for(rng.uniform(0.3, 0.9, 8))  # the same trial's result, now scored on more lines
    (tmp_path / f"eval-{other}" / "result.json").write_text(json.dumps({"per_line": grown, "scale": 0.5}))
    third = selection.paired_verdict(s.study, ObjectiveConfig())
    assert calls == [other]
    fresh = selection.candidate(s.study.trials[other], ObjectiveConfig())
    assert third.leads[other] == real(third.best, fresh) and third.leads[other].n == 6  # the lines both have
