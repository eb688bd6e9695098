"""Short lines and noisy terms: the calibration table's claim (each failure's effect exceeds the clean spread of
the metric meant to catch it) and the robustness rule (metrics with a `min_speech_s` do not count on shorter lines).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from qtts_sweep.metrics.audio import TEMPO_MIN_SPEECH_S, analyze_reference
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import ObjectiveWeights, composite_score
from tests.helpers.speech_clips import SR, clean_clips, missing_sources
from tests.helpers.sweeps import PROJECT_DIR


def _script():
    spec = importlib.util.spec_from_file_location("calibrate_metrics", PROJECT_DIR / "scripts" / "calibrate_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_lines_drop_tempo_and_mos_and_long_lines_keep_everything():
    assert set(REGISTRY.unreliable_keys(TEMPO_MIN_SPEECH_S - 0.1)) >= {"tempo_drift", "dnsmos_ovrl"}
    assert REGISTRY.unreliable_keys(TEMPO_MIN_SPEECH_S) == []
    if missing_sources():
        pytest.skip("; ".join(missing_sources()))
    clip = max(clean_clips(), key=lambda c: len(c.wav))
    assert analyze_reference(clip.wav, SR).speech_s >= TEMPO_MIN_SPEECH_S
    assert analyze_reference(clip.wav[: SR * 2], SR).speech_s < TEMPO_MIN_SPEECH_S


def test_a_term_left_out_for_short_lines_never_counts_as_worst():
    m = {"talker_acc": 0.5, "no_eos_rate": 0.0, "frame_count_error": 0.1, "duration_error": 0.1}
    m["gt_speech_s_max"] = TEMPO_MIN_SPEECH_S - 0.5  # no line long enough
    for missing in ("renormalize", "worst"):
        w = ObjectiveWeights(
            {"spk_sim": 0, "mcd_db": 0, "f0_error": 0, "voicing_error": 0, "code_acc": 0}, True, missing
        )
        without = ObjectiveWeights({**w.weights(), "tempo_drift": 0, "dnsmos_ovrl": 0}, True, missing)
        assert composite_score(m, w) == pytest.approx(composite_score(m, without))
    # the rule changes nothing on a line long enough: present terms count exactly as before
    full = {**m, "tempo_drift": 0.05}
    long_lines = {**m, "gt_speech_s_max": 4.0}  # measurable but absent: `missing` decides as before
    worst = ObjectiveWeights(
        {"spk_sim": 0, "mcd_db": 0, "f0_error": 0, "voicing_error": 0, "code_acc": 0}, True, "worst"
    )
    assert composite_score(long_lines, worst) < composite_score(m, worst)
    w = ObjectiveWeights({"spk_sim": 0, "mcd_db": 0, "f0_error": 0, "voicing_error": 0, "code_acc": 0})
    assert composite_score(full, w) != composite_score(m, w)


@pytest.mark.slow
def test_each_failure_exceeds_the_clean_spread_of_the_metric_meant_to_catch_it(capsys):
    if missing_sources():
        pytest.skip("; ".join(missing_sources()))
    cal = _script()
    bad, speech = cal.badness_matrix(signal_only=False)
    rows = cal.table(bad, speech)
    with capsys.disabled():
        print("\n" + cal.markdown(rows, speech))
    for r in rows:
        assert r["lines"] >= 5, r  # the rule keeps most of the calibration lines
        for failure in cal.MEANT[r["metric"]]:
            if (r["metric"], failure) in cal.KNOWN_MISSES:
                continue
            assert r["effects"][failure] > r["spread"], (r["metric"], failure, r["effects"][failure], r["spread"])
    assert np.isfinite([r["spread"] for r in rows]).all()
