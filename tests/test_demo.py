"""`qtts-sweep demo` runs the tiny preset end to end and writes audio where it says."""

from __future__ import annotations

import pytest
import soundfile as sf

from qtts_sweep.cli import main


@pytest.mark.slow
def test_demo_writes_a_24khz_line(tiny_model_dir, runs_dir, capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    wav = runs_dir / "demo" / "tiny_line.wav"
    assert str(wav) in out
    info = sf.info(wav)
    assert info.samplerate == 24000 and info.frames > 0
