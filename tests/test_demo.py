"""`qtts-sweep demo` (what `make demo` runs): the whole workflow on the tiny preset, then resumable for free."""

from __future__ import annotations

import optuna
import pytest
import soundfile as sf

from qtts_sweep.cli import main


@pytest.mark.slow
def test_demo_sweeps_promotes_and_synthesizes(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QTTS_RUNS_DIR", str(tmp_path))
    args = ["demo", f"paths.models_dir={tiny_model_dir.parent}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(finished) >= 12 and any(t.state.name == "COMPLETE" for t in study.trials)
    assert (tmp_path / "production" / "tiny" / "production.yaml").is_file()
    wav = tmp_path / "synth" / "production" / "text000.wav"
    assert sf.info(wav).samplerate == 24000 and sf.info(wav).frames > 0
    for needle in ("mlflow ui --backend-store-uri", "--host 127.0.0.1", "optuna-dashboard", "listening.html"):
        assert needle in out
    # Running it again resumes the finished study: no new trial, same bundle.
    assert main(args) == 0
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials) == len(
        study.trials
    )
    assert "nothing changed" in capsys.readouterr().out
