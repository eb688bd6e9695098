"""Paired differences with a bootstrap interval and the tie-break rule, on plain numbers."""

from __future__ import annotations

import numpy as np
import pytest

from qtts_sweep.metrics.paired import Candidate, choose, paired_difference, tie_break_key


def _scores(values, seeds=1):
    return {(f"l{i // seeds}", i % seeds): float(v) for i, v in enumerate(values)}


def test_a_consistent_lead_is_outside_noise_and_a_noisy_one_is_a_tie():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.3, 0.7, 40)
    real = paired_difference(_scores(b + 0.05 + rng.normal(0, 0.01, 40)), _scores(b))
    assert real.n == 40 and real.lo > 0 and not real.tie and real.lo < real.mean < real.hi
    noise = paired_difference(_scores(b + rng.normal(0, 0.05, 40)), _scores(b))
    assert noise.lo < 0 < noise.hi and noise.tie
    assert "tie within noise" in noise.describe() and "outside noise" in real.describe()


def test_the_interval_is_reproducible_and_pairs_only_shared_lines():
    a, b = _scores([0.5, 0.6, 0.7, 0.2], seeds=2), _scores([0.4, 0.6, 0.5, 0.3], seeds=2)
    assert paired_difference(a, b) == paired_difference(a, b)  # fixed seed
    b.pop(("l1", 1))
    d = paired_difference(a, b)
    assert (d.n, d.pairs) == (2, 3) and d.mean == pytest.approx((0.1 + 0.0 + 0.2) / 3)  # 2 lines, 3 pairs
    with pytest.raises(ValueError, match="different lines"):
        paired_difference({("x", 0): 1.0}, {("y", 0): 1.0})


def test_one_pair_has_no_interval_and_is_never_called_a_tie():
    d = paired_difference({("a", 0): 0.6}, {("a", 0): 0.6})
    assert not d.has_interval and not d.tie and "no interval" in d.describe()


def test_identical_scores_are_a_tie_resolved_by_the_rule():
    same = _scores([0.4, 0.5, 0.6])
    params = [
        {"eval.lora_scale": 0.4, "eval.epoch": 3, "train.lr": 1e-3},
        {"eval.lora_scale": 0.2, "eval.epoch": 5, "train.lr": 1e-3},
        {"eval.lora_scale": 0.2, "eval.epoch": 2, "train.lr": 3e-3},
    ]
    cands = [Candidate(i, 0.5 - i * 1e-4, p, same) for i, p in enumerate(params)]
    v = choose(cands, ["lower_scale", "earlier_epoch"])
    assert v.best.number == 0 and v.tied == [0, 1, 2] and v.chosen.number == 2 and v.broke_tie
    assert "tied within noise" in v.explain() and "trial 2" in v.explain()
    assert choose(cands, ["lower_lr"]).chosen.number == 0  # lr ties between 0 and 1: the lower number decides
    assert choose(cands, ["earlier_trial"]).chosen.number == 0


def test_a_real_lead_is_not_overruled_by_the_rule():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.7, 20)
    good = Candidate(0, 0.6, {"eval.lora_scale": 1.0}, _scores(base + 0.1))
    cheap = Candidate(1, 0.5, {"eval.lora_scale": 0.2}, _scores(base))
    v = choose([cheap, good])
    assert v.chosen.number == 0 and v.tied == [0] and not v.broke_tie and v.leads[1].lo > 0


def test_missing_parameters_sort_last_and_unknown_rules_are_refused():
    a = Candidate(0, 0.5, {}, {})
    b = Candidate(1, 0.5, {"eval.lora_scale": 0.9}, {})
    assert tie_break_key(b, ["lower_scale"]) < tie_break_key(a, ["lower_scale"])
    with pytest.raises(ValueError, match="unknown tie-break"):
        choose([a], ["cheapest"])
