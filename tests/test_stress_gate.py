"""The production gate (qtts_sweep/production/stress.py): no-EOS rate, duration-ratio tail and speaker drift with
intervals, and the refusal. On the tiny preset: one model made to emit EOS and one that never does, both from the
real tiny weights with the talker's codec-EOS logit biased up or down (below)."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest

from qtts_sweep.config.schema import StressConfig
from qtts_sweep.production import stress
from tests.helpers.sweeps import DEMO_DIR, PROJECT_DIR

STRESS_FILE = PROJECT_DIR / "data" / "stress" / "lines.txt"
N_LINES = 8
D0 = 0  # the hidden dimension that carries the bias


def biased_model(src, dst, eos_logit: float):
    """A copy of the tiny model whose talker gives EOS the logit `eos_logit` and every codec token about 0, at
    every step: the text projection's bias puts a large constant in hidden dimension D0 at every position, no talker
    layer writes to D0, so after the final RMSNorm the hidden state is ~sqrt(D) along D0 alone; the codec head
    reads D0 only for EOS."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(str(dst / "model.safetensors"))
    talker = json.loads((dst / "config.json").read_text())["talker_config"]
    hidden, eos = talker["hidden_size"], talker["codec_eos_token_id"]
    w["talker.text_projection.linear_fc2.weight"][D0] = 0.0
    w["talker.text_projection.linear_fc2.bias"][D0] = 1000.0
    for name in w:
        if name.startswith("talker.model.layers.") and name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name][D0] = 0.0
    w["talker.model.norm.weight"][D0] = 1.0
    head = w["talker.codec_head.weight"]
    head[:, D0] = 0.0
    head[eos] = 0.0
    head[eos, D0] = eos_logit / math.sqrt(hidden)
    save_file({k: v.contiguous() for k, v in w.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    assert torch.isfinite(head).all()
    return dst


def _report(tiny_model_dir, tmp_path_factory, eos_logit: float, cfg: StressConfig):
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.evaluate.synth import Synthesizer
    from qtts_sweep.model import modeling

    folder = biased_model(tiny_model_dir, tmp_path_factory.mktemp("biased") / "model", eos_logit)
    run_cfg = load_config(["model=tiny", f"model.source={folder}"])
    synth = Synthesizer(run_cfg)
    synth.use(None, 0.0, modeling.speaker_embedding(synth.loaded, modeling.load_audio_24k(DEMO_DIR / "ref/ref.flac")))
    texts = stress.read_lines(STRESS_FILE, cfg.lines)
    # production sampling as a bundle decodes, with a low token cap (as tests/conftest.py's CHEAP) to stay fast
    dec = dataclasses.replace(run_cfg.eval.decoding, frames_per_char=0.3, min_frames=6)
    return stress.measure(synth, texts, dec, 4, cfg, str(STRESS_FILE))


# The tiny preset's audio is noise: duration and voice rules are checked below on set numbers, not on it.
GATE = StressConfig(lines=N_LINES, max_no_eos_rate=0.01, max_duration_ratio_p99=None, max_speaker_drift=None)


@pytest.mark.slow
def test_a_model_that_stops_passes_and_one_that_never_stops_is_refused(tiny_model_dir, tmp_path_factory):
    stops = _report(tiny_model_dir, tmp_path_factory, 5.0, GATE)
    assert (stops.lines, stops.no_eos) == (N_LINES, 0)
    assert stops.long_lines >= 1 and stops.speaker_drift is not None  # the file's first lines mix short and long
    assert stress.problems(stops, GATE) == []

    never = _report(tiny_model_dir, tmp_path_factory, -50.0, GATE)
    assert (never.no_eos, never.no_eos_rate) == (N_LINES, 1.0)
    assert never.no_eos_ci[0] > 0.6  # Wilson lower bound for 8/8
    assert never.duration_ratio_p99 > stops.duration_ratio_p99  # run to the cap vs stopped early
    found = stress.problems(never, GATE)
    assert [p.key for p in found] == ["production.stress.max_no_eos_rate"]
    text = str(stress.PromotionRefused(found))
    assert "8 of 8 lines never emitted EOS" in text and "promote --trial" in text and "above the limit 0.01" in text
    for key in ("stress_no_eos_rate", "stress_no_eos_rate_lo", "stress_duration_ratio_p99_hi", "stress_speaker_drift"):
        assert key in never.metrics()


def test_wilson_interval_and_bootstrap():
    lo, hi = stress.wilson(0, 300)
    assert lo == 0.0 and 0.012 < hi < 0.013  # 0 of 300: the rate is below ~1.3% at 95%
    lo, hi = stress.wilson(5, 10)
    assert lo < 0.5 < hi and math.isclose(lo, 1 - hi)
    lo, hi = stress.bootstrap([1.0] * 20 + [5.0], stress.p99)
    assert lo <= hi and hi == 5.0


def test_each_limit_refuses_with_rule_value_and_fix():
    report = stress.StressReport(
        lines=200, no_eos=1, no_eos_rate=0.005, no_eos_ci=(0.001, 0.03), duration_ratio_p99=4.2,
        duration_ratio_p99_ci=(3.1, 6.0), long_lines=40, speaker_drift=0.5, speaker_drift_ci=(0.4, 0.6),
        confidence=0.95, text_file=str(STRESS_FILE),
    )  # fmt: skip
    found = {p.key: p for p in stress.problems(report, StressConfig())}
    assert set(found) == {"production.stress.max_duration_ratio_p99", "production.stress.max_speaker_drift"}
    assert found["production.stress.max_speaker_drift"].value == 0.5 and "40 long lines" in str(
        found["production.stress.max_speaker_drift"].rule
    )
    assert stress.problems(report, dataclasses.replace(StressConfig(), max_duration_ratio_p99=None)).__len__() == 1
    assert "no-EOS 1/200" in report.describe()


def test_shipped_lines_are_many_short_and_long():
    lines = stress.read_lines(STRESS_FILE, 10_000)
    assert len(lines) >= 200
    assert sum(len(t) < 40 for t in lines) >= 60 and sum(len(t) >= 120 for t in lines) >= 60
    assert len(stress.read_lines(STRESS_FILE, N_LINES)) == N_LINES
