"""A trial's result in one shape: what the worker sends (TrialResult) is what report, gc, promote and the tracker
read back (StoredTrial, record.complete_run), through a real Optuna storage."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from qtts_sweep.sweep.record import complete_run
from qtts_sweep.sweep.result import StoredTrial, TrialResult
from qtts_sweep.train.store import CheckpointRef


def _result(tmp_path: Path, trained: list[int]) -> TrialResult:
    ref = CheckpointRef(tmp_path / "store", "k" * 16, 3)
    metrics = {e: {"val_loss": 10.0 - e} for e in (1, 2, 3)}
    return TrialResult(
        checkpoint=ref,
        trained=trained,
        epoch_metrics=metrics,
        objective=0.61,
        summary={"talker_acc": 0.7, "talker_acc_std": 0.1, "constraint_no_eos": -0.2, "constraint_tempo": 0.1},
        eval_dir=tmp_path / "evals" / "e1",
        per_line=[{"id": "a", "seed": 0, "metrics": {"talker_acc": 0.7}}],
        backends={"speaker": "none"},
        lines_used=4,
        lines_total=8,
    )


@pytest.mark.parametrize("trained", [[], [3]])
def test_what_a_trial_records_reads_back_the_same_through_optuna(tmp_path, trained):
    result = pickle.loads(pickle.dumps(_result(tmp_path, trained)))  # it crosses the worker pipe pickled
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=url, direction="maximize")
    dist = {"eval.lora_scale": optuna.distributions.FloatDistribution(0.0, 2.0)}
    trial = optuna.trial.create_trial(
        value=result.objective, params={"eval.lora_scale": 0.3}, distributions=dist, user_attrs=result.user_attrs()
    )
    study.add_trial(trial)
    stored = StoredTrial.of(optuna.load_study(study_name=study.study_name, storage=url).trials[0])

    assert stored.checkpoint == result.checkpoint and stored.training_key == result.training_key == "k" * 16
    assert stored.checkpoint_path == str(result.checkpoint.path)
    assert stored.reused is result.reused is (not trained)  # one type: a bool, in the record and in the tracker
    assert complete_run(result, None, {})["params"]["reused"] is result.reused
    assert stored.trained_epochs == trained and stored.epoch_reached == 3
    assert stored.eval_dir == result.eval_dir and stored.result_file is None  # no result.json written here
    assert stored.summary == {"talker_acc": 0.7, "constraint_no_eos": -0.2, "constraint_tempo": 0.1}
    assert stored.constraints == [-0.2, 0.1]  # sorted by name, Optuna's <= 0 feasible
    assert (stored.lines_used, stored.lines_total) == (4, 8)


def test_a_trial_without_a_result_reads_as_empty(tmp_path):
    """A pruned, failed or running trial has only some attributes; a checkpoint attribute that names no stored
    epoch folder (hand-edited, an older layout) reads as no checkpoint rather than a wrong one."""
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"checkpoint": "/tmp/x"})
    stored = StoredTrial.of(trial)
    assert stored.checkpoint is None and stored.checkpoint_path is None and stored.training_key is None
    assert stored.eval_dir is None and stored.result_file is None and stored.reused is None
    assert stored.summary == {} and stored.trained_epochs == [] and stored.epoch_reached == 0
