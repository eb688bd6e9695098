"""The shipped demo dataset: real (espeak-ng) speech, exact transcripts, native 22.05 kHz, reproducible."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf

from tests.helpers.sweeps import DEMO_DIR, PROJECT_DIR
from tests.helpers.system_deps import require_commands


def _rows():
    return [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()]


def test_manifest_rows_point_at_short_22k_mono_clips():
    rows = _rows()
    assert 60 <= len(rows) <= 100
    texts = {r["text"].lower().strip(" .?!") for r in rows}
    assert len(texts) == len(rows)
    for r in rows:
        info = sf.info(DEMO_DIR / r["audio"])
        assert info.samplerate == 22050 and info.channels == 1  # not 24 kHz: prep must resample
        assert 1.0 <= info.duration <= 4.0, r
        assert (DEMO_DIR / r["ref_audio"]).is_file()


def test_dataset_is_small_enough_to_commit():
    total = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert total < 5 * 2**20


@pytest.mark.slow
def test_generator_reproduces_the_committed_files():
    require_commands("espeak-ng")
    script = PROJECT_DIR / "scripts" / "make_demo_data.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
