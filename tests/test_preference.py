"""Fast checks on real Optuna studies (no model): judgements stored one key each and tallied, the listening
session's blind bookkeeping, study metric names, and pruned trials keeping no value on the objective's axis."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from qtts_sweep.sweep import preference
from qtts_sweep.sweep.listen import Candidate, Line, ListeningSession


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s", direction="maximize")


def test_judgements_are_one_key_each_and_tally_into_wins_losses_ties(study):
    preference.record(study, 3, 5, "l1", 3, "ann")
    preference.record(study, 5, 3, "l2", 3, "bob")
    preference.record(study, 3, 5, "l1", preference.SAME)
    preference.record(study, 3, 7, "l1", 7)
    assert len([k for k in study.user_attrs if k.startswith(preference.PREFIX)]) == 4
    t = preference.tally(study)
    assert (t[3].wins, t[3].losses, t[3].ties, t[3].n) == (2, 1, 1, 4)
    assert t[5].short() == "0-2-1/3" and t[7].short() == "1-0-0/1"
    assert preference.preferred(t) == 7  # 1 of 1 beats 2.5 of 4
    m = preference.metrics(t)
    assert m["listen_judgements"] == 4 and m["listen_trial3_wins"] == 2
    lines = preference.report_lines(t, [3, 5])
    assert "4 judgements" in lines[0] and "trial 3: 2 wins, 1 losses, 1 ties" in lines[1]
    assert "promote <study> --trial 7" in lines[-1]
    with pytest.raises(ValueError, match="neither trial 3"):
        preference.record(study, 3, 5, "l1", 9)


def test_session_is_blind_balanced_and_stores_what_was_shown(study, tmp_path):
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF")
    pool = [Candidate(n, 0.5, {"l1": wav}) for n in (1, 2, 3)]
    logged = []
    session = ListeningSession(study, pool, [Line("l1", "Hello.", {"ground truth": wav})], logged.append, seed=0)
    shown = []
    for _ in range(3):
        c = session.next()
        assert "trial" not in str(c) and c["anchors"][0]["label"] == "ground truth"
        assert session.audio(c["id"], "a") == wav
        shown.append(dict(session.pending[c["id"]]))
        session.judge(c["id"], "b")
    assert sorted(tuple(sorted(s["pair"])) for s in shown) == [(0, 1), (0, 2), (1, 2)]  # each pair once
    stored = preference.judgements(study)
    assert [j["choice"] for j in stored] == [s["b"] for s in shown]
    assert len(logged) == 3 and logged[-1][shown[-1]["b"]].wins >= 1
    with pytest.raises(KeyError):
        session.judge(c["id"], "a")  # each comparison is judged once
    with pytest.raises(ValueError, match="needs two pairs"):
        ListeningSession(study, pool[:1], [Line("l1", "Hi.")])


def test_metric_names_and_pruned_trials_keep_no_value(tmp_path):
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.search import open_study
    from qtts_sweep.sweep.spec import load_spec
    from qtts_sweep.sweep.trials import EpochRelay
    from qtts_sweep.tracking.mlflow_tracker import NullTracker

    spec = dataclasses.replace(load_spec("tiny"), study_name="named")
    # a pruner that prunes every trial whose reported value is below 0 (here: -val_loss)
    spec = dataclasses.replace(spec, pruner="percentile", pruner_kwargs={"percentile": 100.0, "n_startup_trials": 0})
    study = open_study(spec, f"sqlite:///{tmp_path / 'o.db'}")
    assert study.metric_names == ["composite objective"]
    multi = dataclasses.replace(load_spec("pareto"), study_name="pareto")
    assert open_study(multi, f"sqlite:///{tmp_path / 'o.db'}").metric_names == list(multi.objectives)

    cfg = load_config(["model=tiny", f"paths.runs_dir={tmp_path}"], check_model=False)
    study.enqueue_trial({})
    study.tell(study.ask(), 0.2)  # one completed trial for the pruner to compare with
    done = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(value=0.3, intermediate_values={1: -1.0, 2: -0.5}, params={}, distributions={})
    )
    assert done.value == 0.2
    trial = study.ask()
    relay = EpochRelay(trial, NullTracker(), cfg, prunable=True)
    pruned = relay.epoch(1, {"val_loss": 10.0}, False, "key")
    assert pruned
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[-1]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.value is None  # not -10 on the objective's axis
    assert frozen.intermediate_values[1] == -10.0  # the pruner's own curve keeps the real value


def test_a_trial_shorter_than_one_sampling_interval_still_carries_system_metrics(tmp_path):
    # MLflow's monitor drops its unfinished window on shutdown; the tracker logs it (a tiny trial lasts ~1 s, the
    # interval is 5 s). Also: starting a trial must not change the process-wide sampling interval.
    pytest.importorskip("psutil")
    import os

    from mlflow import MlflowClient

    from qtts_sweep.config.schema import TrackingConfig
    from qtts_sweep.tracking.mlflow_tracker import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(TrackingConfig(tracking_uri=uri, artifact_location=str(tmp_path / "art")))
    before = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    run = tracker.start_trial(None, "s", 0, {"train.lr": 1e-5})
    tracker.finish_trial(run, "FINISHED", metrics={"objective": 0.5})
    assert os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL") == before
    data = MlflowClient(uri).get_run(run)
    assert any(k.startswith("system/cpu") for k in data.data.metrics), sorted(data.data.metrics)
    assert data.info.status == "FINISHED" and data.data.metrics["objective"] == 0.5
