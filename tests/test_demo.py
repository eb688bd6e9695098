"""`qtts-sweep demo` (what `make demo` runs): the whole workflow on the tiny preset, then resumable for free."""

from __future__ import annotations

import optuna
import pytest
import soundfile as sf

from qtts_sweep.cli import main
from tests.helpers.sweeps import CHEAP, tiny_paths


@pytest.mark.slow
def test_demo_sweeps_promotes_and_synthesizes(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The demo's whole path (its 12-trial sweep, promotion with the production gate, synthesis, the closing lines)
    with the cheap trial settings every sweep test uses and a 2-line gate: `make demo`'s own training and scoring
    sizes are config values (tests/test_config.py composes and validates experiment=tiny_demo), and cost this test
    two minutes."""
    monkeypatch.setenv("QTTS_RUNS_DIR", str(tmp_path))
    cheap = [*CHEAP, "production.stress.lines=2"]
    args = ["demo", *tiny_paths(tmp_path, tiny_model_dir)[1:], *cheap]  # the runs folder: QTTS_RUNS_DIR
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
    # Running it again resumes the finished study: no new trial, same bundle. The sweep composes its config once
    # (a composition = one validated Config from the Hydra config groups; it was 3, plus Hydra's own, before the
    # launch path lost its CLI -> Hydra -> CLI round trip).
    from qtts_sweep.config import loader
    from qtts_sweep.sweep import launch

    compositions: list[int] = []
    real_finish, real_launch = loader.finish, launch.launch
    monkeypatch.setattr(loader, "finish", lambda *a, **k: compositions.append(1) or real_finish(*a, **k))
    in_sweep: dict[str, int] = {}

    def counted_launch(*a, **k):
        before = len(compositions)
        try:
            return real_launch(*a, **k)
        finally:
            in_sweep["n"] = len(compositions) - before

    monkeypatch.setattr(launch, "launch", counted_launch)
    assert main(args) == 0
    assert in_sweep["n"] == 1
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials) == len(
        study.trials
    )
    assert "nothing changed" in capsys.readouterr().out
