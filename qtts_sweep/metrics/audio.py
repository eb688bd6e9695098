"""Signal metrics of a generated waveform against the line's ground-truth recording (CPU, offline, no model).

What it is: `audio_metrics(gen, ref, sr)` measures the failure modes of fine-tuned Qwen3-TTS that a signal shows
without a speech model (docs/metrics.md explains each and how it is weighed): speech that gets
faster (the double-shift bug), too long or too short, flattened or shifted intonation, spectral distortion
(over-steering, noise), clipping, and silence or noise left before/after the speech (no EOS). `ref` may be
analysed once with `analyze_reference` when many generations of a line are scored (every trial of a sweep).
What it is not: speaker similarity (`speaker.py`), MOS (`mos.py`), how the numbers are weighed (`objective.py`),
synthesis.

How one waveform is analysed (10 ms frames, one grid for every step):

1. Sanitize: NaN/Inf samples are counted (`nonfinite_fraction`) and set to 0, |x| >= 0.999 is counted
   (`clipping_fraction`), then samples are clipped to [-1, 1] (what a PCM file would hold). Only the first
   `MAX_ANALYSIS_S` (120) seconds are analysed (a run-away generation is a failure long before that).
2. F0: WORLD DIO + StoneMask (pyworld), 60-500 Hz. A frame is *voiced* when DIO finds an F0, the frame is
   energetic (step 3), the waveform's normalised autocorrelation at that F0 period is >= `PERIODICITY_MIN`, and
   the frame is in a run of >= 3 such frames (DIO alone "finds" F0 in noise now and then).
3. VAD (energy + voicing): a frame is *energetic* when its 25 ms mean-square level is within `VAD_REL_DB` (40 dB)
   of the clip's own loud level (98th percentile of frame levels) and above `VAD_ABS_FLOOR_DB` (-60 dBFS). A frame
   is *speech* when it is energetic and within `VOICED_HANGOVER_S` (0.2 s) of a voiced frame: unvoiced consonants
   next to vowels count, steady noise (white or pink) does not, babble does. The *speech span* runs from the first
   to the last speech frame; its length is the speech-only duration (leading/trailing silence or noise excluded,
   pauses inside kept: an inserted pause is a timing error too, and counting frames instead would make the
   duration depend on how loud weak consonants are, e.g. 12% off after a WORLD vocoder round trip).
4. Mel-cepstra: WORLD CheapTrick spectral envelope (pyworld), floored `ENVELOPE_RANGE_DB` (60 dB) below its peak,
   -> mel-cepstrum as `pysptk.sp2mc` computes it (order 24, all-pass constant `pysptk.util.mcepalpha(sr)`, 0.466 at
   24 kHz; SPTK's freqt applied as a matrix, equal to sp2mc within 1e-10, tested), over the speech span only
   (leading/trailing silence trimmed). c0 (gain) is dropped: c1..c24 are the features.
5. DTW (`librosa.sequence.dtw`, Euclidean on c1..c24) between the two speech spans gives one alignment path, used
   by the tempo, F0-along-path, voicing and MCD metrics. A span longer than `DTW_MAX_LENGTH_RATIO` (4x) the other is
   cut to that, and both are decimated to at most `MAX_DTW_FRAMES` frames, so memory stays bounded.

Metrics: `METRICS` below declares each one (key, direction, worst value, goodness mapping, default weight);
docs/metrics.md gives the full definitions. "gen" is the generated waveform, "ref" the ground-truth recording of the
same line; ratios are clamped to [0.1, 10], errors and silences capped at their worst values. Two need more words:

- tempo_slope / tempo_drift: the path is cut into `TEMPO_SEGMENTS` (4) parts of equal ref time; each part's local
  rate is the inverse of its least-squares slope (gen frames per ref frame); tempo_slope is the slope of a line
  fitted to ln(local rate) against the part's position (0 at the start, 1 at the end); > 0: gen accelerates relative
  to ref. On the test clips a uniformly 1.3x faster line has tempo_drift <= 0.1, rates 1.0 -> 1.25 -> 1.5 over
  thirds give 0.35-0.67.
- mcd_db: mean over path pairs of (10/ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2), d = 1..24: Kubichek (1993) MCD with
  DTW on WORLD mel-cepstra (the common TTS recipe), not an MFCC approximation.

Degenerate input (empty, silence, white noise, NaN, a single sample, gen or ref without speech, too few voiced
frames for F0, too short for DTW) gets the metric's worst value; no value is ever NaN or Inf. Ref-relative metrics
are worst when ref has no speech (prepared ground truth always has speech: `prepare` rejects silent clips).
Cost: about 0.025 s of CPU per second of audio analysed (2 cores, one used), mostly DIO, CheapTrick and the DTW cost
matrix; a `Reference` reused across trials halves it.

Length: one analysis pipeline whose steps share the frame grid and constants, plus the declarations of the metrics it
computes (kept beside it so each metric is declared once): splitting it would scatter one definition over files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qtts_sweep.metrics import as_mono_float
from qtts_sweep.metrics.registry import ExpError, Metric

# 10 ms analysis hop for F0, VAD and mel-cepstra (one frame grid): the usual speech-analysis hop; a finer one costs
# more CPU (DIO, CheapTrick, and DTW quadratically) without changing line-level statistics.
FRAME_PERIOD_S = 0.010
VAD_WINDOW_S = 0.025  # 25 ms energy window, the usual speech-analysis frame length
F0_FLOOR_HZ = 60.0  # low end of adult speech F0 (deep male voices reach ~65 Hz)
F0_CEIL_HZ = 500.0  # high end of speech F0 incl. excited child/female speech; keeps DIO from octave errors above
VAD_REL_DB = 40.0  # speech frames lie within ~40 dB of an utterance's loud frames; room noise of clean speech below
VAD_ABS_FLOOR_DB = -60.0  # dBFS (mean square): quieter than this is inaudible at normal listening levels
VAD_LOUD_PERCENTILE = 98.0  # the clip's "loud level": robust to a few clicks, unlike the maximum
VOICED_HANGOVER_S = 0.2  # unvoiced consonants (s, t, f) sit within ~200 ms of a vowel; steady noise does not
PERIODICITY_WINDOW_S = 0.030  # autocorrelation window: >= 1.8 periods at the 60 Hz F0 floor
PERIODICITY_MIN = 0.2  # DIO "finds" F0 in white noise now and then; those frames correlate < 0.1 at the found
# period, while 95% of voiced frames of the test clips (LibriVox, ARCTIC, espeak) correlate > 0.3
MIN_VOICED_RUN = 3  # 30 ms: pink noise yields isolated periodic-looking frames at low F0, vowels last >= 50 ms
ENVELOPE_RANGE_DB = 60.0  # envelope floored 60 dB below its peak: an empty band (a 16 kHz recording resampled to
# 24 kHz has nothing above 8 kHz) would otherwise dominate MCD through log(~0)
MIN_SPEECH_FRAMES = 5  # 50 ms: fewer speech frames than this is "no speech"
MIN_VOICED_FRAMES = 10  # F0 statistics need at least 100 ms of voicing to mean anything
MIN_DTW_FRAMES = 10  # a speech span shorter than 100 ms cannot be aligned meaningfully
MCEP_ORDER = 24  # mel-cepstral order used by the usual TTS MCD recipes (c1..c24 scored)
FREQT_INPUT_LEN = 256  # cepstral coefficients fed to freqt: with alpha <= 0.6 the weights of later ones are < 1e-14
MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)  # Kubichek (1993) MCD in dB: (10/ln10) * sqrt(2 * sum d^2)
CLIP_LEVEL = 0.999  # same threshold as qtts_sweep.data.audio.CLIP_LEVEL (data checks)
RATIO_LIMIT = 10.0  # ratios are clamped to [1/10, 10]: anything beyond is the same failure
SILENCE_CAP_S = 30.0  # silences saturate here; also the value when gen has no speech
F0_ERROR_CAP_ST = 24.0  # two octaves: beyond that F0 error is meaningless
F0_RMSE_CAP_CENTS = 2400.0  # two octaves
MCD_CAP_DB = 30.0  # typical TTS-vs-ground-truth MCD is 4-10 dB; noise vs speech reaches ~15-20 dB
RANGE_FLOOR_ST = 0.1  # F0 ranges are floored at 0.1 semitone before dividing (a monotone ref has range ~0)
F0_RANGE_PERCENTILES = (5.0, 95.0)  # range robust to octave errors and stray frames
TEMPO_SEGMENTS = 4  # local-rate estimates along the path; >= 3 to see a trend, each >= ~0.5 s on a 2 s line
# tempo_drift/tempo_slope count only on lines with this much ground-truth speech: each of the 4 segments then
# spans >= 0.6 s; on a 2.2 s line a clean resynthesis already drifts 0.17 (goodness 0.43), while every test clip
# of >= 3 s stays <= 0.11 clean and >= 0.35 accelerating (docs/metrics.md, scripts/calibrate_metrics.py).
TEMPO_MIN_SPEECH_S = 2.5
MAX_ANALYSIS_S = 120.0  # 6x the longest prepared line (data.max_duration_s = 20): longer is a run-away
DTW_MAX_LENGTH_RATIO = 4.0  # a speech span longer than 4x the other is cut for DTW
MAX_DTW_FRAMES = 2000  # decimate longer spans so the cost matrix stays <= 2000 x 2000 (32 MB)

_LOG_RATIO_WORST = math.log(RATIO_LIMIT)

# Goodness scales (exp(-e / scale), registry.ExpError): each is roughly the error a clean line stays well below and
# a clear failure exceeds; tests/test_metrics_audio.py prints both on real speech. Weights: docs/metrics.md says why.
METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("duration_ratio", "one", 1 / RATIO_LIMIT, "", "speech-span duration gen / ref (VAD)"),
        Metric(
            "duration_error",
            "lower",
            _LOG_RATIO_WORST,
            "",
            "abs(ln(duration_ratio))",
            goodness=ExpError(0.2),  # same unit as frame_count_error, measured on speech only
            weight=1.0,
            limit=0.25,  # averaged over lines: about 28% too long/short
            table=True,
        ),
        Metric("tempo_ratio", "one", 1 / RATIO_LIMIT, "", "speaking rate gen / ref from the DTW path slope"),
        Metric("tempo_error", "lower", _LOG_RATIO_WORST, "", "abs(ln(tempo_ratio))"),
        Metric(
            "tempo_slope",
            "zero",
            _LOG_RATIO_WORST,
            "",
            "change of ln(local rate gen/ref), start to end",
            min_speech_s=TEMPO_MIN_SPEECH_S,
        ),
        Metric(
            "tempo_drift",
            "lower",
            _LOG_RATIO_WORST,
            "",
            "abs(tempo_slope): 0 = constant relative rate",
            goodness=ExpError(0.2),  # clean/vocoded <= 0.11, uniform 1.3x stretch <= 0.1, accelerating lines >= 0.35
            weight=1.0,
            limit=0.3,  # between clean (<= 0.11) and accelerating (>= 0.35) test clips; recalibrate on real output
            table=True,
            min_speech_s=TEMPO_MIN_SPEECH_S,
        ),
        Metric("f0_median_ratio", "one", 1 / RATIO_LIMIT, "", "median voiced F0 gen / ref"),
        Metric("f0_range_ratio", "one", 1 / RATIO_LIMIT, "", "F0 5-95th percentile range (semitones) gen / ref"),
        Metric(
            "f0_error",
            "lower",
            F0_ERROR_CAP_ST,
            "semitones",
            "abs(median shift) + abs(range difference)",
            goodness=ExpError(3.0),  # clean <= 1.4 (after a vocoder round trip), +4 st shift >= 3.9, flat F0 >= 3.4
            weight=0.5,
            quality=True,
        ),
        Metric("f0_rmse_cents", "lower", F0_RMSE_CAP_CENTS, "cents", "F0 RMSE along DTW, frames voiced in both"),
        Metric(
            "voicing_error",
            "lower",
            1.0,
            "",
            "share of DTW pairs with disagreeing voicing",
            goodness=ExpError(0.2),  # clean/vocoded <= 0.11, babble tail >= 0.2
            weight=0.5,
            quality=True,
        ),
        Metric(
            "mcd_db",
            "lower",
            MCD_CAP_DB,
            "dB",
            "mel-cepstral distortion (c1..c24) along DTW",
            goodness=ExpError(6.0),  # good TTS vs ground truth is typically 4-6 dB, broken output > 10 dB
            weight=0.5,
            quality=True,
        ),
        Metric("clipping_fraction", "lower", 1.0, "", "share of gen samples with abs(x) >= 0.999"),
        Metric("nonfinite_fraction", "lower", 1.0, "", "share of gen samples that are NaN or Inf"),
        Metric("leading_silence_s", "lower", SILENCE_CAP_S, "s", "non-speech before gen's first speech"),
        Metric("trailing_silence_s", "lower", SILENCE_CAP_S, "s", "non-speech after gen's last speech"),
        Metric("nonspeech_tail_ratio", "lower", 1.0, "", "trailing non-speech / gen duration"),
    )
}


@dataclass
class _Analysis:
    """One waveform on the 10 ms frame grid; `span` is (first, last + 1) speech frame, None without speech."""

    x: np.ndarray  # the analysed samples (at most MAX_ANALYSIS_S seconds)
    sr: int
    times: np.ndarray  # (frames,) frame centres in seconds, k * 10 ms
    f0: np.ndarray  # (frames,) Hz, 0 where DIO found none
    voiced: np.ndarray  # (frames,) bool: F0 found, energetic, periodic, in a run of >= MIN_VOICED_RUN frames
    speech: np.ndarray  # (frames,) bool: the VAD decision
    span: tuple[int, int] | None

    @property
    def analysed_s(self) -> float:
        return self.x.size / self.sr

    @property
    def speech_s(self) -> float:
        """Duration of the speech span (first to last speech frame), 0 without speech."""
        return 0.0 if self.span is None else (self.span[1] - self.span[0]) * FRAME_PERIOD_S


def _sanitize(x: np.ndarray, name: str) -> tuple[np.ndarray, float, float]:
    """(float64 samples in [-1, 1], nonfinite fraction, clipping fraction); fractions are 1.0 for empty input.

    Integer PCM (int16/int32) is scaled to [-1, 1) first, as soundfile would read it.
    """
    x = as_mono_float(x, name)
    if x.size == 0:
        return x, 1.0, 1.0
    finite = np.isfinite(x)
    nonfinite = float(1.0 - finite.mean())
    x[~finite] = 0.0
    clipping = float((np.abs(x) >= CLIP_LEVEL).mean())
    np.clip(x, -1.0, 1.0, out=x)
    return x, nonfinite, clipping


def _frame_levels_db(x: np.ndarray, centres: np.ndarray, win: int) -> np.ndarray:
    """Mean-square level in dBFS of a `win`-sample window centred on each frame's sample, O(len) via a cumsum."""
    padded = np.concatenate([np.zeros(win // 2), x, np.zeros(win)])  # frame at sample c: padded[c : c + win]
    csum = np.concatenate([[0.0], np.cumsum(padded * padded)])
    power = (csum[centres + win] - csum[centres]) / win
    return 10.0 * np.log10(np.maximum(power, 1e-12))  # 1e-12: -120 dB floor for digital silence


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """True within `radius` frames of a True frame (1-D binary dilation by convolution)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return np.convolve(mask.astype(np.float64), np.ones(2 * radius + 1), mode="same") > 0.5


def _drop_short_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    """`mask` without its runs of True shorter than `min_len` frames."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    out = np.zeros(mask.shape, dtype=bool)
    for start, end in zip(starts, ends, strict=True):
        if end - start >= min_len:
            out[start:end] = True
    return out


def _periodicity(x: np.ndarray, f0: np.ndarray, sr: int, centres: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation at the F0 period (best of T-1, T, T+1 samples) around each frame with F0 > 0."""
    win = max(1, round(PERIODICITY_WINDOW_S * sr))
    max_lag = math.ceil(sr / F0_FLOOR_HZ) + 2
    padded = np.concatenate([np.zeros(win // 2), x, np.zeros(win + max_lag)])  # frame at sample c: padded[c:]
    out = np.zeros(f0.size)
    frames = np.flatnonzero(f0 > 0)
    offsets = np.arange(win)
    for chunk in np.array_split(frames, max(1, math.ceil(frames.size / 1024))):  # (1024, win) blocks: bounded memory
        if chunk.size == 0:
            continue
        starts = centres[chunk]
        a = padded[starts[:, None] + offsets]  # (frames, win)
        energy_a = np.einsum("ij,ij->i", a, a)
        lags = np.clip(np.rint(sr / f0[chunk]).astype(np.int64), 2, max_lag - 1)
        best = np.zeros(chunk.size)
        for shift in (-1, 0, 1):  # F0 is rarely an integer number of samples
            b = padded[(starts + lags + shift)[:, None] + offsets]
            den = np.sqrt(energy_a * np.einsum("ij,ij->i", b, b))
            corr = np.einsum("ij,ij->i", a, b) / np.maximum(den, 1e-30)
            best = np.maximum(best, np.where(den > 0, corr, 0.0))
        out[chunk] = best
    return out


def _analyze(x: np.ndarray, sr: int) -> _Analysis:
    """F0, voicing and VAD of a sanitized waveform (its first MAX_ANALYSIS_S seconds)."""
    x = np.ascontiguousarray(x[: int(MAX_ANALYSIS_S * sr)])
    if x.size < MIN_SPEECH_FRAMES * FRAME_PERIOD_S * sr:
        none = np.zeros(0, dtype=bool)
        return _Analysis(x, sr, np.zeros(0), np.zeros(0), none, none, None)

    import pyworld

    f0, times = pyworld.dio(x, sr, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_S * 1000)
    f0 = pyworld.stonemask(x, f0, times, sr)
    f0 = np.where(np.isfinite(f0) & (f0 > 0), f0, 0.0)
    centres = np.minimum(np.rint(times * sr).astype(np.int64), x.size)  # frame k's sample (k * 10 ms)
    levels = _frame_levels_db(x, centres, max(1, round(VAD_WINDOW_S * sr)))
    threshold = max(float(np.percentile(levels, VAD_LOUD_PERCENTILE)) - VAD_REL_DB, VAD_ABS_FLOOR_DB)
    energetic = levels > threshold
    voiced = energetic & (f0 > 0)
    voiced &= _periodicity(x, np.where(voiced, f0, 0.0), sr, centres) >= PERIODICITY_MIN
    voiced = _drop_short_runs(voiced, MIN_VOICED_RUN)
    speech = energetic & _dilate(voiced, round(VOICED_HANGOVER_S / FRAME_PERIOD_S))
    span = None
    if speech.sum() >= MIN_SPEECH_FRAMES:
        idx = np.flatnonzero(speech)
        span = (int(idx[0]), int(idx[-1]) + 1)
    return _Analysis(x, sr, times, f0, voiced, speech, span)


def _freqt_matrix(sr: int) -> np.ndarray:
    """(24, FREQT_INPUT_LEN) matrix M with M @ c[:FREQT_INPUT_LEN] == pysptk.freqt(c, 24, alpha)[1:].

    SPTK's freqt (the all-pass frequency warping inside `pysptk.sp2mc`) is linear in the cepstrum, so applying it
    to the basis vectors once and multiplying replaces one Python-level call per frame (10x faster; the test
    suite checks the result equals `pysptk.sp2mc` to 1e-10).
    """
    import pysptk

    alpha = pysptk.util.mcepalpha(sr)
    basis = np.eye(FREQT_INPUT_LEN)
    return np.stack([pysptk.freqt(basis[n], MCEP_ORDER, alpha)[1:] for n in range(FREQT_INPUT_LEN)], axis=1)


def _mcep(a: _Analysis, start: int, stop: int, freqt: np.ndarray) -> np.ndarray:
    """(stop - start, 24) mel-cepstra c1..c24 of frames [start, stop): CheapTrick envelope -> sp2mc."""
    import pyworld

    envelope = pyworld.cheaptrick(a.x, a.f0[start:stop], a.times[start:stop], a.sr, f0_floor=F0_FLOOR_HZ)
    floor = max(float(envelope.max()) * 10.0 ** (-ENVELOPE_RANGE_DB / 10.0), 1e-30)  # (frames, fft/2 + 1) power
    cepstrum = np.fft.irfft(np.log(np.maximum(envelope, floor)), axis=1)  # as pysptk.sp2mc: c0 halved, then freqt
    cepstrum[:, 0] /= 2.0
    return np.ascontiguousarray(cepstrum[:, :FREQT_INPUT_LEN] @ freqt.T)


class Reference:
    """A ground-truth recording analysed once, to score many generations of the same line against it.

    A sweep scores every trial's output of a line against the same recording: `analyze_reference` does the
    reference's F0, VAD and mel-cepstra once (the mel-cepstra on first use, kept in this object).
    """

    def __init__(self, wav: np.ndarray, sr: int) -> None:
        self.sr = _check_sr(sr)
        self.analysis = _analyze(_sanitize(wav, "ref")[0], self.sr)
        self._freqt: np.ndarray | None = None
        self._mcep: dict[tuple[int, int], np.ndarray] = {}

    @property
    def speech_s(self) -> float:
        """Length of the speech span (first to last speech frame) in seconds; 0 without speech."""
        span = self.analysis.span
        return 0.0 if span is None else (span[1] - span[0]) * FRAME_PERIOD_S

    @property
    def freqt(self) -> np.ndarray:
        if self._freqt is None:
            self._freqt = _freqt_matrix(self.sr)
        return self._freqt

    def mcep(self, start: int, stop: int) -> np.ndarray:
        if (start, stop) not in self._mcep:
            self._mcep[(start, stop)] = _mcep(self.analysis, start, stop, self.freqt)
        return self._mcep[(start, stop)]


def analyze_reference(ref: np.ndarray, sr: int = 24000) -> Reference:
    """Analyse a ground-truth recording once; pass the result to `audio_metrics` as `ref`.

    Raises:
        ValueError: when `sr` is not a positive integer or `ref` is not 1-D.
    """
    return Reference(ref, sr)


def _check_sr(sr: int) -> int:
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr <= 0:
        raise ValueError(f"`sr` must be a positive integer sample rate, got {sr!r}. Fix: pass e.g. sr=24000.")
    return int(sr)


def _clamp_ratio(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return 1.0 / RATIO_LIMIT
    return min(max(value, 1.0 / RATIO_LIMIT), RATIO_LIMIT)


def _f0_stats(a: _Analysis) -> tuple[float, float] | None:
    """(median F0 in Hz, 5-95th percentile range in semitones) of the voiced frames, None if too few."""
    f0 = a.f0[a.voiced]
    if f0.size < MIN_VOICED_FRAMES:
        return None
    lo, hi = np.percentile(f0, F0_RANGE_PERCENTILES)
    return float(np.median(f0)), float(12.0 * math.log2(hi / lo))


def _tempo(gi: np.ndarray, ri: np.ndarray) -> tuple[float, float] | None:
    """(tempo_ratio, tempo_slope) from an ascending DTW path, None when it is too short to fit."""
    if np.ptp(ri) < MIN_DTW_FRAMES:
        return None
    overall = float(np.polyfit(ri, gi, 1)[0])  # gen frames per ref frame
    edges = np.linspace(ri.min(), ri.max() + 1, TEMPO_SEGMENTS + 1)  # parts of equal ref time
    centres, log_rates, weights = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (ri >= lo) & (ri < hi)
        if sel.sum() < 2 or np.ptp(ri[sel]) == 0:
            continue
        local = _clamp_ratio(float(np.polyfit(ri[sel], gi[sel], 1)[0]))
        centres.append(float(ri[sel].mean() - ri.min()) / float(np.ptp(ri)))
        log_rates.append(-math.log(local))  # ln(rate): ref frames per gen frame
        weights.append(math.sqrt(sel.sum()))
    if len(centres) < 2:
        return None
    slope = float(np.polyfit(centres, log_rates, 1, w=weights)[0])
    slope = min(max(slope, -_LOG_RATIO_WORST), _LOG_RATIO_WORST)
    return _clamp_ratio(1.0 / overall if overall > 0 else 0.0), slope


def _gen_only_metrics(gen: _Analysis, clipping: float, nonfinite: float) -> dict[str, float]:
    out = {"clipping_fraction": clipping, "nonfinite_fraction": nonfinite}
    if gen.span is None:
        return out
    trailing = max(0.0, gen.analysed_s - gen.span[1] * FRAME_PERIOD_S)
    return out | {
        "leading_silence_s": min(gen.span[0] * FRAME_PERIOD_S, SILENCE_CAP_S),
        "trailing_silence_s": min(trailing, SILENCE_CAP_S),
        "nonspeech_tail_ratio": min(1.0, trailing / gen.analysed_s),
    }


def _f0_metrics(gen: _Analysis, ref: _Analysis) -> dict[str, float]:
    g, r = _f0_stats(gen), _f0_stats(ref)
    if g is None or r is None:
        return {}
    error = abs(12.0 * math.log2(g[0] / r[0])) + abs(g[1] - r[1])
    return {
        "f0_median_ratio": _clamp_ratio(g[0] / r[0]),
        "f0_range_ratio": _clamp_ratio(max(g[1], RANGE_FLOOR_ST) / max(r[1], RANGE_FLOOR_ST)),
        "f0_error": min(error, F0_ERROR_CAP_ST),
    }


def _path_metrics(gen: _Analysis, reference: Reference, gen_span: tuple[int, int], ref_span: tuple[int, int]) -> dict:
    """MCD, tempo, voicing and F0 RMSE along one DTW path between the speech spans."""
    ref = reference.analysis
    n_gen, n_ref = gen_span[1] - gen_span[0], ref_span[1] - ref_span[0]
    # a span over 4x the other is cut: its duration_error already says so, and DTW cost stays bounded
    n_gen, n_ref = min(n_gen, int(DTW_MAX_LENGTH_RATIO * n_ref)), min(n_ref, int(DTW_MAX_LENGTH_RATIO * n_gen))
    if n_gen < MIN_DTW_FRAMES or n_ref < MIN_DTW_FRAMES:
        return {}
    step = max(1, math.ceil(max(n_gen, n_ref) / MAX_DTW_FRAMES))  # decimation keeps the cost matrix bounded
    gen_frames = np.arange(gen_span[0], gen_span[0] + n_gen, step)
    ref_frames = np.arange(ref_span[0], ref_span[0] + n_ref, step)
    gen_mc = _mcep(gen, gen_span[0], gen_span[0] + n_gen, reference.freqt)[::step]  # (gen frames, 24)
    ref_mc = reference.mcep(ref_span[0], ref_span[0] + n_ref)[::step]  # (ref frames, 24)
    import librosa

    _, wp = librosa.sequence.dtw(X=gen_mc.T, Y=ref_mc.T, metric="euclidean")
    wp = wp[::-1]  # librosa returns the path end first
    gi, ri = wp[:, 0], wp[:, 1]  # indices into the decimated spans
    diff = gen_mc[gi] - ref_mc[ri]
    out = {"mcd_db": min(float(np.mean(MCD_CONST * np.sqrt(np.sum(diff * diff, axis=1)))), MCD_CAP_DB)}
    tempo = _tempo(gi * step, ri * step)
    if tempo is not None:
        out |= {"tempo_ratio": tempo[0], "tempo_error": abs(math.log(tempo[0]))}
        out |= {"tempo_slope": tempo[1], "tempo_drift": abs(tempo[1])}
    gv, rv = gen.voiced[gen_frames[gi]], ref.voiced[ref_frames[ri]]
    out["voicing_error"] = float(np.mean(gv != rv))
    both = gv & rv
    if both.sum() >= MIN_VOICED_FRAMES:
        cents = 1200.0 * np.log2(gen.f0[gen_frames[gi[both]]] / ref.f0[ref_frames[ri[both]]])
        out["f0_rmse_cents"] = min(float(np.sqrt(np.mean(cents * cents))), F0_RMSE_CAP_CENTS)
    return out


def audio_metrics(gen: np.ndarray, ref: np.ndarray | Reference, sr: int = 24000) -> dict[str, float]:
    """Signal metrics of a generated waveform against the line's ground-truth recording.

    Args:
        gen: the generated waveform, mono (1-D), float in [-1, 1] nominally (integer PCM is scaled); any content is
            accepted: empty, silence, noise, NaN/Inf, values beyond +-1, hours of audio.
        ref: the ground-truth recording of the same line (mono, same sample rate), or its `analyze_reference`
            result when several generations are scored against it.
        sr: sample rate of both, in Hz (24000 for Qwen3-TTS).

    Returns:
        Every key of `METRICS`, each a finite float; a metric undefined for the input gets its worst value (module
        docstring).

    Raises:
        ValueError: when `sr` is not a positive integer, differs from a `Reference`'s, or an input is not 1-D (a
            programming error, not a bad waveform).
    """
    sr = _check_sr(sr)
    reference = ref if isinstance(ref, Reference) else Reference(ref, sr)
    if reference.sr != sr:
        raise ValueError(f"`ref` was analysed at {reference.sr} Hz but `sr` is {sr}. Fix: pass sr={reference.sr}.")
    gen_x, gen_nonfinite, gen_clipping = _sanitize(gen, "gen")
    g, r = _analyze(gen_x, sr), reference.analysis
    out = {name: spec.worst for name, spec in METRICS.items()}
    out |= _gen_only_metrics(g, gen_clipping, gen_nonfinite)
    if g.span is not None and r.span is not None:
        ratio = _clamp_ratio(g.speech_s / r.speech_s)
        out |= {"duration_ratio": ratio, "duration_error": abs(math.log(ratio))}
        out |= _f0_metrics(g, r)
        out |= _path_metrics(g, reference, g.span, r.span)
    return {k: float(v) if math.isfinite(v) else METRICS[k].worst for k, v in out.items()}
