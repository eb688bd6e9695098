"""Audio, speaker and MOS metrics on real speech: each metric moves on the failure it is meant to catch.

Clean clips: five human recordings (LibriVox x2, CMU ARCTIC, two pocketsphinx test speakers) and two espeak-ng
demo lines (`tests/helpers/speech_clips.py` says where each comes from). Every failure is made from the clip itself:

- stretch_1.3x: librosa phase-vocoder time stretch, 1.3x faster (the double-shift symptom).
- accelerate: thirds stretched at 1.0, 1.25, 1.5 and concatenated (speed-up within the line).
- accelerate_same_mean: thirds at 0.8, 1.0, 1.25: the line speeds up but its average rate is about right.
- white_tail / pink_tail: 8 s of white / pink noise at the clip's RMS appended (a generation that did not stop).
- babble_tail: 8 s of other voices' clips, reversed and mixed at the clip's RMS, appended.
- pitch_up_4st: librosa pitch shift by +4 semitones.
- flat_f0: WORLD (pyworld) analysis-resynthesis with F0 replaced by the clip's median F0 on voiced frames
  (monotone intonation; spectral envelope and aperiodicity kept), not a synthetic tone.
- other_speaker: a clip of a different voice (speaker similarity only).
- lead_silence / clipped / nan_burst: 2 s of near-silence prepended, 8x gain hard-clipped, 1% NaN samples.

The clean baseline is honest, not gen == ref: each clip is scored after the nuisances a good system may add
without being wrong: 24k -> 16k -> 24k resampling, -0.9 dB gain, a 30 ms delay and a noise floor 50 dB below
the clip (`clean`), and separately a WORLD vocoder round trip with the original F0 (`vocoded`, the same
processing `flat_f0` gets, so F0 metrics are shown to react to flat intonation, not to vocoding). A failure must
score worse than the worst clean variant of EVERY clip, not just its own clip's; the margin (best failure minus
worst clean, in the metric's "worse" direction) is printed for every (metric, failure) pair.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from qtts_sweep.metrics.audio import METRICS, analyze_reference, audio_metrics
from tests.helpers.speech_clips import (
    SEED,
    SR,
    Clip,
    clean_clips,
    missing_sources,
    read_clip,
    same_voice_extra,
    shared_audio_metrics,
    shared_mos,
    shared_variants,
    stretch,
)
from tests.helpers.sweeps import DEMO_DIR
from tests.helpers.system_deps import require_sources

CLEAN = ("clean", "vocoded")
# What each metric is meant to catch (asserted); every other pair is printed only.
EXPECTED: dict[str, tuple[str, ...]] = {
    "duration_error": ("stretch_1.3x", "accelerate", "babble_tail"),
    "tempo_error": ("stretch_1.3x", "accelerate", "babble_tail"),
    "tempo_drift": ("accelerate", "accelerate_same_mean", "babble_tail"),
    "f0_error": ("pitch_up_4st", "flat_f0"),
    "f0_median_ratio": ("pitch_up_4st",),
    "f0_range_ratio": ("flat_f0",),
    "f0_rmse_cents": ("pitch_up_4st", "flat_f0"),
    "voicing_error": ("babble_tail",),
    "mcd_db": ("pitch_up_4st", "babble_tail", "stretch_1.3x"),
    "trailing_silence_s": ("white_tail", "pink_tail"),
    "nonspeech_tail_ratio": ("white_tail", "pink_tail"),
    "leading_silence_s": ("lead_silence",),
    "clipping_fraction": ("clipped",),
    "nonfinite_fraction": ("nan_burst",),
}


def _badness(name: str, value: float) -> float:
    """Larger = worse, whatever the metric's direction (ratios by their log distance from 1)."""
    better = METRICS[name].better if name in METRICS else "higher"
    if better == "one":
        return abs(math.log(value))
    if better == "zero":
        return abs(value)
    return -value if better == "higher" else value


@dataclass
class Matrix:
    """Per clip, per variant: the waveform and its metrics against the clip."""

    clips: list[Clip]
    wavs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    cost_s: float = 0.0
    audio_s: float = 0.0

    def margin(self, name: str, failure: str) -> tuple[float, float, float]:
        """(worst clean badness over all clips, best failure badness over all clips, margin = best - worst)."""
        clean = max(_badness(name, self.metrics[c.name][v][name]) for c in self.clips for v in CLEAN)
        fail = min(_badness(name, self.metrics[c.name][failure][name]) for c in self.clips)
        return clean, fail, fail - clean


def _require_clips() -> list[Clip]:
    require_sources(missing_sources())
    clips = clean_clips()
    assert len(clips) >= 5 and sum(c.human for c in clips) >= 2  # enough voices that a margin is not one clip's luck
    return clips


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return _require_clips()


@pytest.fixture(scope="module")
def matrix(clips) -> Matrix:
    m = Matrix(clips)
    for i, clip in enumerate(clips):
        m.wavs[clip.name] = shared_variants(clip, clips, i)  # computed once per session (test_calibration too)
        m.metrics[clip.name] = {}
        start = time.process_time()
        ref = analyze_reference(clip.wav, SR)  # once per line, as a sweep does
        m.cost_s += time.process_time() - start
        m.audio_s += len(clip.wav) / SR
        for variant, wav in m.wavs[clip.name].items():
            m.metrics[clip.name][variant], cost = shared_audio_metrics(clip, i, variant, wav, ref)
            m.cost_s += cost  # where it was computed
            m.audio_s += len(wav) / SR
    return m


def _print_table(capsys, title: str, rows: list[tuple[str, str, float, float, float, bool]]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        print(f"  {'metric':22s} {'failure':22s} {'worst clean':>12s} {'best failure':>13s} {'margin':>9s}")
        for name, failure, clean, fail, margin, asserted in rows:
            flag = "" if asserted else "   (not asserted)"
            print(f"  {name:22s} {failure:22s} {clean:12.4f} {fail:13.4f} {margin:9.4f}{flag}")


@pytest.mark.slow
def test_each_audio_metric_catches_its_failures_on_every_clip(matrix, capsys):
    rows, failed = [], []
    failures = [v for v in next(iter(matrix.metrics.values())) if v not in CLEAN]
    for name in METRICS:
        expected = EXPECTED.get(name, ())
        for failure in failures:
            clean, fail, margin = matrix.margin(name, failure)
            if failure in expected or margin > 0:
                rows.append((name, failure, clean, fail, margin, failure in expected))
            if failure in expected and not margin > 0:
                failed.append(f"{name} on {failure}: best failure {fail:.4f} vs worst clean {clean:.4f}")
    _print_table(capsys, f"audio metric margins over {len(matrix.clips)} clips (badness: higher = worse)", rows)
    with capsys.disabled():  # cost is printed, not asserted: shared machines vary
        print(
            f"audio_metrics cost: {matrix.cost_s / matrix.audio_s:.4f} s CPU per second of audio analysed "
            f"(generations + each reference once): {matrix.audio_s:.0f} s of audio in {matrix.cost_s:.1f} s"
        )
    assert not failed, "failures that do not score worse than every clean clip:\n" + "\n".join(failed)
    assert set(EXPECTED) <= set(METRICS)


@pytest.mark.slow
def test_tempo_drift_sees_acceleration_that_a_uniform_stretch_and_average_rate_hide(matrix, capsys):
    """Uniform 1.3x speed has large duration/tempo error but no drift; 0.8 -> 1.0 -> 1.25 keeps the average rate
    (duration error no worse than a uniform 10% change) yet drifts."""
    m = matrix.metrics
    uniform = max(m[c.name]["stretch_1.3x"]["tempo_drift"] for c in matrix.clips)
    accel = min(m[c.name][v]["tempo_drift"] for c in matrix.clips for v in ("accelerate", "accelerate_same_mean"))
    same_mean_duration = max(m[c.name]["accelerate_same_mean"]["duration_error"] for c in matrix.clips)
    with capsys.disabled():
        print(f"\ntempo_drift: uniform 1.3x max {uniform:.3f} < accelerating min {accel:.3f} ({accel - uniform:.3f})")
        print(f"duration_error of accelerate_same_mean: max {same_mean_duration:.3f} (ln 1.1 = {math.log(1.1):.3f})")
    assert uniform < accel
    assert same_mean_duration < math.log(1.1)
    slopes = [m[c.name]["accelerate"]["tempo_slope"] for c in matrix.clips]
    assert all(s > 0 for s in slopes), slopes  # the sign says "gen speeds up"


@pytest.mark.slow
def test_speaker_similarity_drops_for_other_voices_and_failures(matrix, capsys):
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    spk = SpeakerSimilarity()
    voices = sorted({c.voice for c in matrix.clips})
    sims: dict[str, list[float]] = {}
    for clip in matrix.clips:
        ref = spk.embed(clip.wav, SR)
        other = next(c for c in matrix.clips if c.voice == voices[(voices.index(clip.voice) + 1) % len(voices)])
        cases = {v: matrix.wavs[clip.name][v] for v in (*CLEAN, "pitch_up_4st", "babble_tail", "pink_tail")}
        cases["other_speaker"] = other.wav
        for variant, wav in cases.items():
            sims.setdefault(variant, []).append(spk.similarity(spk.embed(wav, SR), ref))
    worst_clean = min(min(sims[v]) for v in CLEAN)
    rows = [
        ("spk_sim", v, -worst_clean, -max(sims[v]), worst_clean - max(sims[v]), True) for v in sims if v not in CLEAN
    ]
    _print_table(capsys, "speaker similarity margins (badness = -similarity)", rows)
    for v in sims:
        if v not in CLEAN:
            assert max(sims[v]) < worst_clean, (v, sims[v], worst_clean)


@pytest.mark.slow
def test_speaker_similarity_same_voice_other_line_beats_every_other_voice(clips, capsys):
    """The harder, honest baseline: another recording of the same speaker (different text) against clips of other
    speakers, for the voices that have one (LibriVox reader, pocketsphinx "cards" speaker, espeak)."""
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    spk = SpeakerSimilarity()
    emb = {c.name: spk.embed(c.wav, SR) for c in clips}
    same, other = [], []
    for clip in clips:
        same += [spk.similarity(spk.embed(w, SR), emb[clip.name]) for w in same_voice_extra(clip.voice)]
        other += [spk.similarity(emb[c.name], emb[clip.name]) for c in clips if c.voice != clip.voice]
    assert len(same) >= 5
    with capsys.disabled():
        print(
            f"\nspk_sim same voice, other line: min {min(same):.3f}; other voices: max {max(other):.3f} "
            f"(margin {min(same) - max(other):.3f})"
        )
    assert min(same) > max(other)


@pytest.mark.slow
def test_mos_drops_for_noise_tails(matrix, capsys):
    from qtts_sweep.metrics.mos import MosPredictor

    mos = MosPredictor()
    scores: dict[str, list[float]] = {}
    for i, clip in enumerate(matrix.clips):
        for variant in ("clean", "white_tail", "pink_tail"):  # computed once per session (test_calibration too)
            scores.setdefault(variant, []).append(shared_mos(mos, clip, i, variant, matrix.wavs[clip.name][variant]))
    worst_clean = min(scores["clean"])
    rows = [
        ("dnsmos_ovrl", v, -worst_clean, -max(scores[v]), worst_clean - max(scores[v]), True)
        for v in ("white_tail", "pink_tail")
    ]
    _print_table(capsys, "DNSMOS OVRL margins (badness = -MOS)", rows)
    for v in ("white_tail", "pink_tail"):
        assert max(scores[v]) < worst_clean, (v, scores[v], worst_clean)


# --- degenerate input: fast, always run -------------------------------------------------------------------------


def _degenerate_inputs(speech: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    nan_half = speech.copy()
    nan_half[: len(nan_half) // 2] = np.nan
    return {
        "empty": np.zeros(0, dtype=np.float32),
        "one_sample": np.array([0.5], dtype=np.float32),
        "one_frame": speech[:240],
        "silence": np.zeros(2 * SR, dtype=np.float32),
        "white_noise": rng.normal(0.0, 0.3, 3 * SR).astype(np.float32),
        "dc": np.full(SR, 0.5, dtype=np.float32),
        "all_nan": np.full(SR, np.nan, dtype=np.float32),
        "inf": np.where(np.arange(len(speech)) % 500 == 0, np.inf, speech).astype(np.float32),
        "nan_half": nan_half,
        "huge": speech * 1e6,
        "inaudible": speech * 1e-6,
        "int16": (speech * 32767).astype(np.int16),
    }


def _assert_all_finite(out: dict[str, float], case: str) -> None:
    assert set(out) == set(METRICS), case
    bad = {k: v for k, v in out.items() if not (isinstance(v, float) and math.isfinite(v))}
    assert not bad, (case, bad)


@pytest.fixture(scope="module")
def one_speech_clip() -> np.ndarray:
    return read_clip(DEMO_DIR / "wavs" / "demo_0076.flac")  # always present: the repo's own demo data


def test_every_audio_metric_is_finite_for_degenerate_input(one_speech_clip):
    speech = one_speech_clip
    for name, wav in _degenerate_inputs(speech).items():
        for gen, ref, order in ((wav, speech, "gen"), (speech, wav, "ref"), (wav, wav, "both")):
            _assert_all_finite(audio_metrics(gen, ref, SR), f"{name} as {order}")


@pytest.mark.slow
def test_every_audio_metric_is_finite_for_extremely_long_input(one_speech_clip, capsys):
    """A run-away generation: 10 minutes of speech repeated over noise, and 10 minutes of noise alone."""
    rng = np.random.default_rng(SEED)
    n = 600 * SR
    noise = rng.normal(0.0, 0.05, n).astype(np.float32)
    babbling = noise + np.resize(one_speech_clip, n)
    for name, gen in (("noise", noise), ("repeated speech", babbling)):
        start = time.process_time()
        out = audio_metrics(gen, one_speech_clip, SR)
        with capsys.disabled():
            print(f"\n10 min of {name}: {time.process_time() - start:.1f} s CPU")
        _assert_all_finite(out, name)
        # analysis stops at MAX_ANALYSIS_S (120 s): 120 s of speech against a 3.9 s line is still >= 10x
        assert out["duration_error"] == pytest.approx(math.log(10))
    _assert_all_finite(audio_metrics(one_speech_clip, noise[: 60 * SR], SR), "long noise as ref")


@pytest.mark.parametrize("name", ["empty", "silence", "white_noise", "all_nan", "inaudible", "one_frame"])
def test_no_speech_gets_the_documented_worst_values(one_speech_clip, name):
    wav = _degenerate_inputs(one_speech_clip)[name]
    out = audio_metrics(wav, one_speech_clip, SR)
    for key in ("duration_error", "tempo_drift", "f0_error", "mcd_db", "voicing_error", "trailing_silence_s"):
        assert out[key] == METRICS[key].worst, (name, key, out[key])
    # ref without speech: every ref-relative metric is worst too
    swapped = audio_metrics(one_speech_clip, wav, SR)
    assert swapped["duration_error"] == METRICS["duration_error"].worst
    assert swapped["mcd_db"] == METRICS["mcd_db"].worst


def test_worst_values_are_no_better_than_a_clean_line(one_speech_clip):
    """The documented worst value of each metric is at least as bad as what a clean copy gets."""
    clean = audio_metrics(one_speech_clip * 0.9, one_speech_clip, SR)
    for name, spec in METRICS.items():
        assert _badness(name, spec.worst) >= _badness(name, clean[name]), name


def test_speech_against_itself_is_near_perfect(one_speech_clip):
    out = audio_metrics(one_speech_clip, one_speech_clip, SR)
    assert out["duration_error"] == 0.0 and out["mcd_db"] == 0.0 and out["voicing_error"] == 0.0
    assert out["tempo_ratio"] == pytest.approx(1.0, abs=1e-6) and out["tempo_drift"] < 1e-6
    assert out["clipping_fraction"] == 0.0 and out["nonfinite_fraction"] == 0.0


def test_every_metric_is_documented_in_the_docs_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    for name in METRICS:
        assert f"| `{name}` |" in doc or f"| {name} |" in doc, name


def test_bad_arguments_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="mono"):
        audio_metrics(np.zeros((2, 100)), np.zeros(100), SR)
    with pytest.raises(ValueError, match="sample rate"):
        audio_metrics(np.zeros(100), np.zeros(100), 0)


@pytest.mark.slow
def test_speaker_and_mos_are_finite_for_degenerate_input(one_speech_clip):
    from qtts_sweep.metrics.mos import METRICS as MOS_METRICS
    from qtts_sweep.metrics.mos import MosPredictor
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    spk, mos = SpeakerSimilarity(), MosPredictor()
    ref = spk.embed(one_speech_clip, SR)
    assert spk.similarity(ref, ref) == pytest.approx(1.0, abs=1e-5)
    inputs = _degenerate_inputs(one_speech_clip)
    inputs["long_noise"] = np.random.default_rng(SEED).normal(0.0, 0.1, 30 * SR).astype(np.float32)
    for name, wav in inputs.items():
        sim = spk.similarity(spk.embed(wav, SR), ref)
        scores = mos.predict(wav, SR)
        assert math.isfinite(sim) and 0.0 <= sim <= 1.0, (name, sim)
        assert set(scores) == set(MOS_METRICS)
        assert all(math.isfinite(v) and 1.0 <= v <= 5.0 for v in scores.values()), (name, scores)
        if name in ("empty", "silence", "all_nan", "inaudible"):
            assert sim == 0.0 and all(v == 1.0 for v in scores.values()), (name, sim, scores)


def test_a_reused_reference_gives_the_same_numbers(one_speech_clip):
    gen = stretch(one_speech_clip, 1.2)
    ref = analyze_reference(one_speech_clip, SR)
    assert audio_metrics(gen, ref, SR) == audio_metrics(gen, one_speech_clip, SR)
    assert audio_metrics(gen, ref, SR) == audio_metrics(gen, ref, SR)  # its cached mel-cepstra change nothing
    with pytest.raises(ValueError, match="sr=24000"):
        audio_metrics(gen, ref, 16000)


def test_mel_cepstra_equal_pysptk_sp2mc(one_speech_clip):
    """The freqt-as-a-matrix shortcut is sp2mc (order 24, mcepalpha(24000)) on the floored CheapTrick envelope."""
    import pysptk
    import pyworld

    from qtts_sweep.metrics import audio

    ref = analyze_reference(one_speech_clip, SR)
    a = ref.analysis
    assert a.span is not None
    ours = ref.mcep(*a.span)
    envelope = pyworld.cheaptrick(a.x, a.f0[a.span[0] : a.span[1]], a.times[a.span[0] : a.span[1]], SR, f0_floor=60.0)
    envelope = np.maximum(envelope, envelope.max() * 10 ** (-audio.ENVELOPE_RANGE_DB / 10))
    expected = pysptk.sp2mc(envelope, audio.MCEP_ORDER, pysptk.util.mcepalpha(SR))[:, 1:]
    assert ours.shape == expected.shape == (a.span[1] - a.span[0], 24)
    np.testing.assert_allclose(ours, expected, atol=1e-10)
