"""The metric registry: a metric declared once reaches the objective, the config, the report table, MLflow and the
evaluation cache key; declarations and config keys are checked with every problem at once."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from qtts_sweep.config.loader import load_config
from qtts_sweep.config.schema import ConfigError
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import DIRECTIONS, ObjectiveWeights, composite_score, constraint_violations
from qtts_sweep.metrics.registry import CappedSimilarity, ExpError, Linear, Metric, Registry

TOY_SCALE = 0.5


def toy_peak(gen: np.ndarray, ref: object, sr: int) -> float:
    """A toy audio metric: the generated waveform's peak level (lower is better here, for the test's sake)."""
    x = np.asarray(gen, dtype=np.float64)
    return float(np.max(np.abs(x))) if x.size else 1.0


TOY = Metric(
    "toy_peak",
    "lower",
    1.0,
    "",
    "peak absolute sample of gen",
    goodness=ExpError(TOY_SCALE),
    weight=1.0,
    table=True,
    compute=toy_peak,
)


@pytest.fixture
def toy_registered():
    REGISTRY.register(TOY)
    try:
        yield TOY
    finally:
        REGISTRY.unregister(TOY.key)


def test_the_built_in_registry_holds_todays_weights_columns_and_limits():
    assert REGISTRY.default_weights() == {
        "talker_acc": 1.0,
        "code_acc": 0.5,
        "no_eos_rate": 2.0,
        "frame_count_error": 1.0,
        "duration_error": 1.0,
        "tempo_drift": 1.0,
        "f0_error": 0.5,
        "voicing_error": 0.5,
        "mcd_db": 0.5,
        "spk_sim": 1.0,
        "dnsmos_ovrl": 0.5,
    }
    assert REGISTRY.table_keys() == [
        "talker_acc",
        "code_acc",
        "no_eos_rate",
        "frame_count_error",
        "duration_error",
        "tempo_drift",
        "spk_sim",
        "dnsmos_ovrl",
    ]
    assert REGISTRY.default_limits() == {"max_no_eos_rate": 0.05, "max_duration_error": 0.25, "max_tempo_drift": 0.3}
    assert REGISTRY.capped_keys() == ["spk_sim"]
    assert "duration_ratio" not in DIRECTIONS and DIRECTIONS["score"] == "maximize"


def test_goodness_mappings_give_the_documented_numbers():
    assert ExpError(0.2)(0.2) == pytest.approx(math.exp(-1.0))
    assert ExpError(0.2)(-1.0) == 1.0
    assert Linear(1.0, 5.0)(3.0) == 0.5 and Linear(1.0, 5.0)(6.0) == 1.0
    assert CappedSimilarity()(0.97, cap=0.8) == 0.8 and CappedSimilarity()(0.97) == 0.97


def test_a_bad_declaration_lists_every_problem():
    with pytest.raises(ValueError) as err:
        Metric("bad key", "up", math.nan, "", "x", weight=-1.0, limit=0.1)  # type: ignore[arg-type]
    message = str(err.value)
    for field in ("`key`", "`better`", "`worst`", "`weight`", "`limit`"):
        assert field in message, field
    with pytest.raises(ValueError, match="needs a goodness mapping"):
        Metric("m", "lower", 1.0, "", "x", weight=1.0)
    with pytest.raises(ValueError, match="needs better='lower' or 'higher'"):
        Metric("m", "one", 0.1, "", "x", goodness=ExpError(1.0))
    with pytest.raises(ValueError, match="already registered"):
        Registry([TOY, TOY])


def test_registering_changes_the_cache_digest_and_unregistering_restores_it():
    before = REGISTRY.digest()
    REGISTRY.register(TOY)
    try:
        assert REGISTRY.digest() != before
    finally:
        REGISTRY.unregister(TOY.key)
    assert REGISTRY.digest() == before
    other = Registry(REGISTRY)
    other.unregister("mcd_db")
    other.register(Metric("mcd_db", "lower", 30.0, "dB", "x", goodness=ExpError(6.0), weight=0.5, version=2))
    assert other.digest() != before  # a redefined metric (new version) invalidates cached evaluations


def test_config_weights_and_limits_are_checked_against_the_registry():
    cfg = load_config(
        ["model=tiny", "eval.objective.weights.mcd_db=0", "eval.objective.constraints.max_tempo_drift=null"]
    )
    assert cfg.eval.objective.weights == REGISTRY.default_weights() | {"mcd_db": 0.0}
    assert cfg.eval.objective.constraints["max_tempo_drift"] is None
    assert "tempo_drift" not in constraint_violations({}, cfg.eval.objective.constraint_limits())
    with pytest.raises(ConfigError) as err:
        load_config(
            [
                "model=tiny",
                "eval.objective.weights.mcd_dbb=1",
                "eval.objective.weights.spk_sim=-1",
                "eval.objective.constraints.max_tempo_drif=0.1",
            ]
        )
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "`eval.objective.weights.mcd_dbb` = 1.0" in message and "did you mean `mcd_db`?" in message
    assert "`eval.objective.weights.spk_sim` = -1.0: a weight must be a finite number >= 0" in message
    assert "did you mean `max_tempo_drift`?" in message


def test_a_registered_weight_joins_the_config_and_the_composite(toy_registered):
    cfg = load_config(["model=tiny"])
    assert cfg.eval.objective.weights["toy_peak"] == 1.0
    assert cfg.eval.objective.weights["mcd_db"] == 0.5
    metrics = {"talker_acc": 0.5, "toy_peak": 0.25}
    expected = (1.0 * 0.5 + 1.0 * math.exp(-0.25 / TOY_SCALE)) / 2.0
    assert composite_score(metrics, cfg.eval.objective.objective_weights()) == pytest.approx(expected, rel=1e-12)
    assert DIRECTIONS["toy_peak"] == "minimize"


@pytest.mark.slow
def test_a_toy_audio_metric_reaches_the_objective_the_report_table_and_mlflow(toy_registered, tiny_model_dir, tmp_path):
    """Registration is all it takes: the scoring function computes it on every line of the tiny preset,
    aggregates it, weighs it into the objective and keys the cache on it; the trial's record puts it in the report
    table and in the MLflow run."""
    import optuna
    from mlflow import MlflowClient

    from qtts_sweep.evaluate.scoring import BASE_KEY, Point, Scorer, eval_key, held_out_lines
    from qtts_sweep.sweep.record import complete_run
    from qtts_sweep.sweep.report import format_table
    from qtts_sweep.sweep.result import TrialResult
    from qtts_sweep.tracking.mlflow_tracker import make_tracker
    from qtts_sweep.train.loop import resolve_run

    cfg = load_config(
        [
            "model=tiny",
            f"paths.models_dir={tiny_model_dir.parent}",
            "eval.max_lines=2",
            "eval.batch_size=2",
            "eval.decoding.frames_per_char=0.3",
            "eval.decoding.min_frames=6",
            "eval.metrics.mos=none",
            "eval.metrics.speaker=none",
            "eval.metrics.qwen_speaker=false",
            # scored against the recording: the expected objective below is the plain composite (the ceiling-
            # relative mode has its own tests in tests/test_ceiling.py)
            "eval.objective.reference=ground_truth",
            f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/mlartifacts",
        ]
    )
    dataset = resolve_run(cfg).dataset
    ev = Scorer().score(cfg, dataset, Point.base())

    # per line: the registered function on the line's own audio; summary: their mean
    peaks = [toy_peak(sf.read(ev.dir / row["wav"], dtype="float32")[0], None, 24000) for row in ev.per_line]
    assert [row["metrics"]["toy_peak"] for row in ev.per_line] == pytest.approx(peaks, rel=1e-6)
    assert ev.summary["toy_peak"] == pytest.approx(float(np.mean(peaks)), rel=1e-6)
    assert 0.0 < ev.summary["toy_peak"] <= 1.0

    # objective: the toy term enters with its default weight 1 and goodness exp(-peak / 0.5)
    without = ObjectiveWeights({"toy_peak": 0.0})
    present = sum(w for k, w in without.weights().items() if k in ev.summary)  # renormalize: measured terms only
    toy_goodness = math.exp(-ev.summary["toy_peak"] / TOY_SCALE)
    expected = (composite_score(ev.summary, without) * present + toy_goodness) / (present + 1.0)
    assert ev.objective == pytest.approx(expected, rel=1e-9)
    assert ev.objective != pytest.approx(composite_score(ev.summary, without), rel=1e-6)

    # what a sweep trial records from this result: Optuna user attributes (the report) and the MLflow payload
    result = TrialResult.of(None, ev)  # the base model: no checkpoint
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            value=ev.objective,
            params={"eval.lora_scale": 0.0},
            distributions={"eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 2.0)},
            user_attrs=result.user_attrs(),
        )
    )
    header, row = format_table(study).splitlines()[1:3]
    column = header.split().index("toy_peak")
    assert row.split()[column] == f"{ev.summary['toy_peak']:.4g}"

    tracker = make_tracker(cfg.tracking)
    run_id = tracker.start_trial(None, "toy", 0, {"eval.lora_scale": 0.0})
    tracker.finish_trial(run_id, "FINISHED", **complete_run(result, None, {}))
    logged = MlflowClient(cfg.tracking.tracking_uri).get_run(run_id).data.metrics
    assert logged["toy_peak"] == pytest.approx(ev.summary["toy_peak"])
    assert logged["toy_peak_std"] == pytest.approx(ev.summary["toy_peak_std"])
    assert logged["objective"] == pytest.approx(ev.objective)

    # the cache key follows the registry: the same evaluation without the toy metric is another cache entry
    lines = held_out_lines(dataset, cfg.eval.split, cfg.eval.max_lines)
    ceiling = ev.ceiling["key"] if ev.ceiling else None
    base = json.loads((ev.dir / "result.json").read_text())["training_key"]  # the talker, dtype, device, data
    assert base.startswith(BASE_KEY + "-") and eval_key(base, None, 0.0, cfg.eval, lines, ceiling) == ev.key
    REGISTRY.unregister(TOY.key)
    try:
        assert eval_key(base, None, 0.0, cfg.eval, lines, ceiling) != ev.key
    finally:
        REGISTRY.register(TOY)
