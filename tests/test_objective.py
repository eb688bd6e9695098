"""objective.py on plain numbers: the composite is monotone in every term, speaker similarity is capped at the
ground truth's, missing metrics are explicit, constraints follow Optuna's sign convention, aggregation survives
0 and 1 lines. No model, no audio."""

from __future__ import annotations

import math

import pytest

from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import (
    DIRECTIONS,
    ConstraintLimits,
    ObjectiveWeights,
    aggregate_lines,
    composite_score,
    constraint_violations,
    frame_count_error,
    objective_vector,
)

# A plausible mid-quality trial: every term strictly inside its range, so moving any one moves the score.
BASE = {
    "talker_acc": 0.5,
    "code_acc": 0.4,
    "no_eos_rate": 0.1,
    "frame_count_error": 0.2,
    "duration_error": 0.2,
    "tempo_drift": 0.1,
    "f0_error": 2.0,
    "voicing_error": 0.1,
    "mcd_db": 6.0,
    "spk_sim": 0.7,
    "dnsmos_ovrl": 3.0,
}
TERMS = list(ObjectiveWeights().weights())


def test_every_term_has_a_direction_and_a_finite_worst_value():
    assert set(TERMS) == set(BASE)
    for name in TERMS:
        assert name in DIRECTIONS, name
    for metric in REGISTRY:
        assert math.isfinite(metric.worst), metric.key


@pytest.mark.parametrize("name", TERMS)
def test_composite_is_strictly_monotone_in_each_term(name):
    w = ObjectiveWeights()
    better = 1 if DIRECTIONS[name] == "maximize" else -1
    step = 0.05 * max(abs(BASE[name]), 0.1)
    scores = [composite_score(BASE | {name: BASE[name] + better * k * step}, w) for k in (-1, 0, 1)]
    assert scores[0] < scores[1] < scores[2], (name, scores)


@pytest.mark.parametrize("name", TERMS)
def test_a_zero_weight_drops_the_term(name):
    w = ObjectiveWeights({name: 0.0})
    worse = 0.0 if DIRECTIONS[name] == "maximize" else BASE[name] * 10 + 1
    assert composite_score(BASE | {name: worse}, w) == composite_score(BASE, w)


def test_score_is_the_documented_weighted_mean():
    w = ObjectiveWeights()
    goodness = {
        "talker_acc": 0.5,
        "code_acc": 0.4,
        "no_eos_rate": 0.9,
        "frame_count_error": math.exp(-0.2 / 0.2),
        "duration_error": math.exp(-0.2 / 0.2),
        "tempo_drift": math.exp(-0.1 / 0.2),
        "f0_error": math.exp(-2.0 / 3.0),
        "voicing_error": math.exp(-0.1 / 0.2),
        "mcd_db": math.exp(-6.0 / 6.0),
        "spk_sim": 0.7,
        "dnsmos_ovrl": 0.5,
    }
    weights = w.weights()
    expected = sum(weights[k] * g for k, g in goodness.items()) / sum(weights.values())
    assert composite_score(BASE, w) == pytest.approx(expected, rel=1e-12)
    # the registry's default weights give the number the hand-written weights gave before the registry existed
    assert composite_score(BASE, w) == pytest.approx(0.582758226527774, rel=1e-12)


def test_speaker_similarity_is_capped_at_the_ground_truth_level():
    w = ObjectiveWeights()
    gt = 0.8
    at_gt = composite_score(BASE | {"spk_sim": gt}, w, gt_spk_sim=gt)
    # babble / over-steered output "more similar" than a real recording gains nothing beyond it
    assert composite_score(BASE | {"spk_sim": 0.97}, w, gt_spk_sim=gt) == at_gt
    assert composite_score(BASE | {"spk_sim": 0.7}, w, gt_spk_sim=gt) < at_gt  # below the cap it still counts
    uncapped = ObjectiveWeights(spk_sim_cap_to_gt=False)
    assert composite_score(BASE | {"spk_sim": 0.97}, uncapped, gt_spk_sim=gt) > at_gt
    # no ground-truth level known (None / NaN): no cap
    assert composite_score(BASE | {"spk_sim": 0.97}, w) > at_gt
    assert composite_score(BASE | {"spk_sim": 0.97}, w, gt_spk_sim=math.nan) > at_gt
    assert objective_vector(BASE | {"spk_sim": 0.97}, ["spk_sim"], gt_spk_sim=gt) == [gt]


def test_missing_metric_renormalizes_by_default():
    without_mos = {k: v for k, v in BASE.items() if k != "dnsmos_ovrl"}
    assert composite_score(without_mos, ObjectiveWeights()) == pytest.approx(
        composite_score(BASE, ObjectiveWeights({"dnsmos_ovrl": 0.0})), rel=1e-12
    )


def test_missing_metric_counts_as_worst_when_asked():
    without_mos = {k: v for k, v in BASE.items() if k != "dnsmos_ovrl"}
    w = ObjectiveWeights(missing="worst")
    assert composite_score(without_mos, w) == pytest.approx(composite_score(BASE | {"dnsmos_ovrl": 1.0}, w))
    assert composite_score(without_mos, w) < composite_score(without_mos, ObjectiveWeights())


@pytest.mark.parametrize("missing", ["renormalize", "worst"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nonfinite_metric_counts_as_worst_under_either_policy(missing, bad):
    w = ObjectiveWeights(missing=missing)
    worst_mcd = composite_score(BASE | {"mcd_db": 1e9}, w)
    assert composite_score(BASE | {"mcd_db": bad}, w) == pytest.approx(worst_mcd, abs=1e-12)
    assert composite_score(BASE | {"mcd_db": bad}, w) < composite_score(BASE, w)


def test_nothing_to_score_is_the_worst_score():
    assert composite_score({}, ObjectiveWeights()) == 0.0
    zero = ObjectiveWeights(dict.fromkeys(TERMS, 0.0))
    assert composite_score(BASE, zero) == 0.0
    assert composite_score({}, ObjectiveWeights(missing="worst")) == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, 1.0])
def test_score_is_finite_and_in_unit_range_for_any_values(value):
    for missing in ("renormalize", "worst"):
        s = composite_score(dict.fromkeys(TERMS, value), ObjectiveWeights(missing=missing), gt_spk_sim=value)
        assert math.isfinite(s) and 0.0 <= s <= 1.0


def test_perfect_trial_scores_one():
    perfect = {k: (1.0 if DIRECTIONS[k] == "maximize" else 0.0) for k in TERMS} | {"dnsmos_ovrl": 5.0}
    assert composite_score(perfect, ObjectiveWeights()) == pytest.approx(1.0)


def test_invalid_weights_are_all_reported_at_once():
    bad = {"mcd_db": -1.0, "spk_sim": math.nan, "f0_error": True, "mcd_dbb": 1.0, "duration_ratio": 1.0}
    with pytest.raises(ValueError) as err:
        ObjectiveWeights(bad, missing="ignore")  # type: ignore[arg-type]
    message = str(err.value)
    for key in ("`mcd_db` = -1.0", "`spk_sim` = nan", "`f0_error` = True", "`missing` = 'ignore'"):
        assert key in message
    assert "`mcd_dbb` = 1.0" in message and "did you mean `mcd_db`?" in message
    assert "`duration_ratio` = 1.0: is not a registered metric with a goodness mapping" in message  # a diagnostic
    assert "Fix:" in message


def test_constraints_follow_optunas_sign_convention():
    limits = ConstraintLimits({"max_no_eos_rate": 0.05, "max_tempo_drift": 0.3, "max_duration_error": 0.25})
    ok = {"no_eos_rate": 0.0, "tempo_drift": 0.1, "duration_error": 0.25}
    v = constraint_violations(ok, limits)
    assert list(v) == ["no_eos_rate", "duration_error", "tempo_drift"]  # registry order: stable for Optuna
    assert v["no_eos_rate"] == pytest.approx(-0.05)
    assert v["tempo_drift"] == pytest.approx(-0.2)
    assert v["duration_error"] == 0.0  # exactly at the limit is satisfied
    assert all(x <= 0 for x in v.values())
    bad = constraint_violations({"no_eos_rate": 0.2, "tempo_drift": 0.5, "duration_error": 0.3}, limits)
    assert bad["no_eos_rate"] == pytest.approx(0.15) and bad["tempo_drift"] == pytest.approx(0.2)
    assert all(x > 0 for x in bad.values())


def test_unmeasured_constraint_metric_is_infeasible_not_assumed_fine():
    v = constraint_violations({"tempo_drift": math.nan}, ConstraintLimits())
    assert v["no_eos_rate"] == pytest.approx(1.0 - 0.05)  # missing: worst value 1.0 minus the limit
    assert v["tempo_drift"] > 0 and v["duration_error"] > 0
    assert all(math.isfinite(x) for x in v.values())


def test_disabled_constraints_are_left_out_and_limits_validated():
    v = constraint_violations(BASE, ConstraintLimits({"max_no_eos_rate": None, "max_frame_count_error": 0.1}))
    assert list(v) == ["duration_error", "tempo_drift", "frame_count_error"]
    assert v["frame_count_error"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="max_tempo_drift"):
        ConstraintLimits({"max_tempo_drift": -0.1})
    with pytest.raises(ValueError, match="did you mean `max_tempo_drift`"):
        ConstraintLimits({"max_tempo_drif": 0.1})
    with pytest.raises(ValueError, match="max_spk_sim"):
        ConstraintLimits({"max_spk_sim": 0.5})  # higher is better: an upper limit means nothing


def test_objective_vector_values_directions_and_worst_for_missing():
    names = ["spk_sim", "duration_error", "dnsmos_ovrl", "talker_acc"]
    vec = objective_vector({"spk_sim": 0.8, "duration_error": 0.1, "dnsmos_ovrl": math.nan}, names)
    assert vec == [0.8, 0.1, 1.0, 0.0]  # MOS NaN -> worst 1.0, talker_acc missing -> worst 0.0
    assert [DIRECTIONS[n] for n in names] == ["maximize", "minimize", "maximize", "maximize"]


def test_objective_vector_rejects_names_without_a_direction():
    with pytest.raises(ValueError, match="did you mean `duration_error`"):
        objective_vector(BASE, ["duration_eror"])
    with pytest.raises(ValueError, match="duration_ratio"):
        objective_vector(BASE, ["duration_ratio"])  # a diagnostic ratio: best at 1, not a direction


def test_aggregate_zero_and_one_line():
    assert aggregate_lines([]) == {"n_lines": 0.0}
    assert composite_score(aggregate_lines([]), ObjectiveWeights()) == 0.0
    one = aggregate_lines([{"mcd_db": 5.0, "no_eos_rate": 1.0}])
    assert one == {"n_lines": 1.0, "mcd_db": 5.0, "mcd_db_std": 0.0, "no_eos_rate": 1.0, "no_eos_rate_std": 0.0}


def test_aggregate_means_spreads_missing_and_nonfinite():
    lines = [
        {"mcd_db": 4.0, "no_eos_rate": 0.0, "spk_sim": 0.8, "custom": 1.0},
        {"mcd_db": 6.0, "no_eos_rate": 1.0, "custom": math.nan},  # spk_sim missing on this line
        {"mcd_db": math.nan, "no_eos_rate": 0.0, "spk_sim": 0.6},
    ]
    out = aggregate_lines(lines)
    assert out["n_lines"] == 3.0
    assert out["no_eos_rate"] == pytest.approx(1 / 3)  # per-line 0/1 flags average to the rate
    assert out["mcd_db"] == pytest.approx((4.0 + 6.0 + 30.0) / 3)  # NaN counts as MCD's worst, 30 dB
    assert out["spk_sim"] == pytest.approx(0.7) and out["spk_sim_std"] == pytest.approx(0.1)
    assert out["custom"] == 1.0 and out["custom_std"] == 0.0  # unknown metric: NaN left out
    assert all(math.isfinite(v) for v in out.values())
    huge = aggregate_lines([{"mcd_db": 1e308}, {"mcd_db": 1e308}, {"other": 1e308}, {"other": 1e308}])
    assert huge["mcd_db"] == 30.0 and "other" not in huge  # overflowing sums: known -> worst, unknown -> dropped


def test_frame_count_error():
    assert frame_count_error(100, 100) == 0.0
    assert frame_count_error(200, 100) == pytest.approx(math.log(2))
    assert frame_count_error(50, 100) == pytest.approx(math.log(2))
    assert frame_count_error(0, 100) == pytest.approx(math.log(10))
    assert frame_count_error(100, 0) == pytest.approx(math.log(10))
    assert frame_count_error(10_000, 10) == pytest.approx(math.log(10))
