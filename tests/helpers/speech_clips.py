"""Real speech clips for metric tests, found where packages installed them; no downloads, nothing generated.

Sources (each clip with the voice it belongs to, so tests can pick "a different speaker"):

- LibriVox human speech: Debian package `pocketsphinx-testdata` (installed by scripts/system-deps.sh),
  `/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-08*.wav` (16 kHz, one reader).
- Two more human voices from the same package: `cards/005.wav` ("eight of spades four of clubs seven of hearts")
  and `numbers.raw` (headerless 16 kHz 16-bit little-endian PCM).
- CMU ARCTIC human speech shipped inside the `pysptk` PyPI package: `pysptk/example_audio_data/arctic_a0007.wav`.
- The repo's espeak-ng demo clips (`data/demo/wavs/*.flac`, 22.05 kHz, synthetic).

Everything is returned as mono float32 at 24 kHz (soxr, high quality), the rate the metrics are used at.
`variants` makes the clean versions and the failures of one clip (tests/test_metrics_audio.py describes them);
the metric tests and scripts/calibrate_metrics.py share it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers.sweeps import DEMO_DIR

SR = 24000  # the Qwen3-TTS codec rate: metrics see 24 kHz audio
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")  # Debian pocketsphinx-testdata's install path
RAW_SR = 16000  # pocketsphinx-testdata's .raw files: 16 kHz, 16-bit little-endian mono (its test scripts say so)


@dataclass(frozen=True)
class Clip:
    """One clean recording: `voice` names the speaker, `human` says whether a person spoke it."""

    name: str
    voice: str
    human: bool
    source: str
    wav: np.ndarray  # (samples,) float32 at 24 kHz


def _to_24k(wav: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    return soxr.resample(wav, sr, SR, quality="HQ").astype(np.float32) if sr != SR else wav


def read_clip(path: Path) -> np.ndarray:
    """Any clip file (or pocketsphinx .raw) as mono float32 at 24 kHz."""
    import soundfile as sf

    if path.suffix == ".raw":
        return _to_24k(np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0, RAW_SR)
    wav, sr = sf.read(str(path), dtype="float32")
    return _to_24k(wav, sr)


def pysptk_arctic() -> Path | None:
    """Path of the CMU ARCTIC clip inside the installed pysptk package, None when pysptk is not installed."""
    spec = importlib.util.find_spec("pysptk")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "example_audio_data" / "arctic_a0007.wav"
    return path if path.is_file() else None


# (name, voice, human, path or None): the clean set, in a fixed order. Voices: librivox (one reader), arctic,
# cards, numbers (pocketsphinx test speakers), espeak.
def _catalogue() -> list[tuple[str, str, bool, Path | None]]:
    librivox = POCKETSPHINX_DATA / "librivox"
    return [
        ("librivox-0890", "librivox", True, librivox / "sense_and_sensibility_01_austen_64kb-0890.wav"),
        ("librivox-0920", "librivox", True, librivox / "sense_and_sensibility_01_austen_64kb-0920.wav"),
        ("arctic-a0007", "arctic", True, pysptk_arctic()),
        ("cards-005", "cards", True, POCKETSPHINX_DATA / "cards" / "005.wav"),
        ("numbers", "numbers", True, POCKETSPHINX_DATA / "numbers.raw"),
        ("espeak-0076", "espeak", False, DEMO_DIR / "wavs" / "demo_0076.flac"),
        ("espeak-0063", "espeak", False, DEMO_DIR / "wavs" / "demo_0063.flac"),
    ]


def missing_sources() -> list[str]:
    """Human-readable list of clip sources that are not installed (empty when every clip is available)."""
    missing = []
    for name, _, _, path in _catalogue():
        if path is None or not path.is_file():
            where = "pip install pysptk" if name.startswith("arctic") else "apt-get install pocketsphinx-testdata"
            if name.startswith("espeak"):
                where = "the repo's data/demo"
            missing.append(f"{name} ({path or 'pysptk not installed'}; fix: {where})")
    return missing


def clean_clips() -> list[Clip]:
    """Every available clip of the catalogue (callers fail with the fix when `missing_sources()` is not empty)."""
    return [
        Clip(name, voice, human, str(path), read_clip(path))
        for name, voice, human, path in _catalogue()
        if path is not None and path.is_file()
    ]


def same_voice_extra(voice: str) -> list[np.ndarray]:
    """Other recordings of a voice (not in the clean set), for same-speaker checks; empty when there are none."""
    paths = {
        "librivox": sorted((POCKETSPHINX_DATA / "librivox").glob("*-08[78]0.wav")),
        "cards": [POCKETSPHINX_DATA / "cards" / "002.wav"],
        "espeak": [DEMO_DIR / "wavs" / "demo_0021.flac"],
    }.get(voice, [])
    return [read_clip(p) for p in paths if p.is_file()]


TAIL_S = 8.0  # noise/babble tail: longer than any clip, like a generation that misses EOS and runs to its cap
PINK_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]  # Kellet/Smith 1/f filter (CCRMA "pink noise")
PINK_A = [1.0, -2.494956002, 2.017265875, -0.522189400]
SEED = 20240607  # fixed: noise tails and the clean noise floor are reproducible


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def stretch(x: np.ndarray, rate: float) -> np.ndarray:
    import librosa

    return librosa.effects.time_stretch(x, rate=rate).astype(np.float32)


def _thirds(x: np.ndarray, rates: tuple[float, float, float]) -> np.ndarray:
    n = len(x) // 3
    return np.concatenate([stretch(part, r) for part, r in zip((x[:n], x[n : 2 * n], x[2 * n :]), rates, strict=True)])


def _pitch(x: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(x, sr=SR, n_steps=4.0).astype(np.float32)


def _world(x: np.ndarray, flatten: bool) -> np.ndarray:
    import pyworld

    x64 = x.astype(np.float64)
    f0, t = pyworld.harvest(x64, SR, f0_floor=60.0, f0_ceil=500.0, frame_period=5.0)
    sp = pyworld.cheaptrick(x64, f0, t, SR)
    ap = pyworld.d4c(x64, f0, t, SR)
    if flatten:
        f0 = np.where(f0 > 0, np.median(f0[f0 > 0]), 0.0)
    return pyworld.synthesize(f0, sp, ap, SR, frame_period=5.0)[: len(x)].astype(np.float32)


def _clean(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import soxr

    y = soxr.resample(soxr.resample(x, SR, 16000, quality="HQ"), 16000, SR, quality="HQ")[: len(x)] * 0.9
    y = np.concatenate([np.zeros(int(0.03 * SR), dtype=np.float32), y])
    return (y + rng.normal(0.0, _rms(x) * 10 ** (-50 / 20), len(y))).astype(np.float32)


def _tail(x: np.ndarray, tail: np.ndarray) -> np.ndarray:
    return np.clip(np.concatenate([x, tail / _rms(tail) * _rms(x)]), -1.0, 1.0).astype(np.float32)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter(PINK_B, PINK_A, rng.normal(size=n))


def _babble(clip: Clip, clips: list[Clip]) -> np.ndarray:
    others = [c.wav for c in clips if c.voice != clip.voice][:3]
    n = int(TAIL_S * SR)
    return np.sum([np.resize(o[::-1], n) / _rms(o) for o in others], axis=0)


def variants(clip: Clip, clips: list[Clip], index: int) -> dict[str, np.ndarray]:
    """The clean variants (`clean`, `vocoded`) and every failure of the test module docstring, made from `clip`."""
    rng = np.random.default_rng([SEED, index])
    x = clip.wav
    n_tail = int(TAIL_S * SR)
    clipped = np.clip(x * 8.0, -1.0, 1.0)
    nan_burst = x.copy()
    nan_burst[rng.choice(len(x), len(x) // 100, replace=False)] = np.nan
    lead = np.concatenate([rng.normal(0.0, 1e-5, 2 * SR).astype(np.float32), x])
    return {
        "clean": _clean(x, rng),
        "vocoded": _world(x, flatten=False),
        "stretch_1.3x": stretch(x, 1.3),
        "accelerate": _thirds(x, (1.0, 1.25, 1.5)),
        "accelerate_same_mean": _thirds(x, (0.8, 1.0, 1.25)),
        "white_tail": _tail(x, rng.normal(size=n_tail)),
        "pink_tail": _tail(x, _pink(rng, n_tail)),
        "babble_tail": _tail(x, _babble(clip, clips)),
        "pitch_up_4st": _pitch(x),
        "flat_f0": _world(x, flatten=True),
        "lead_silence": lead,
        "clipped": clipped.astype(np.float32),
        "nan_burst": nan_burst,
    }


# Short lines, cut from the human clips at word boundaries. No aligned transcripts ship with these clips (the
# LibriVox `transcription` file has the words, not their times), so the boundaries are pauses found by frame
# energy: a run of >= PAUSE_MIN_S of 10 ms frames at least PAUSE_BELOW_DB under the clip's loudest frame. A pause
# that long between voiced frames is a gap between words (stop closures inside a word are shorter); cutting at
# its middle leaves every word whole.
PAUSE_HOP_S = 0.01
PAUSE_BELOW_DB = 25.0
PAUSE_MIN_S = 0.08
SHORT_MAX_S = 2.3  # a cut's extent from its first to its last loud frame: under the 2.5 s rule, by a margin
SHORT_MIN_S = 0.9  # and long enough to hold a few words


def pauses(wav: np.ndarray, sr: int = SR) -> list[tuple[int, int]]:
    """(first, end) sample of every pause of `wav` (see PAUSE_*), in order; edges count when quiet enough."""
    hop = int(PAUSE_HOP_S * sr)
    n = len(wav) // hop
    rms = np.sqrt(np.mean(np.square(wav[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)) + 1e-12
    quiet = 20.0 * np.log10(rms / rms.max()) < -PAUSE_BELOW_DB
    out, i = [], 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if (j - i) * PAUSE_HOP_S >= PAUSE_MIN_S:
            out.append((i * hop, j * hop))
        i = j
    return out


def word_cuts(wav: np.ndarray, sr: int = SR) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) samples of `wav`, each from a pause's middle to a later pause's middle, whose
    loud extent (first pause's end to last pause's start) lies in [SHORT_MIN_S, SHORT_MAX_S]; greedy, longest
    first from each start."""
    ps = pauses(wav, sr)
    edges = [(0, 0)] + ps + [(len(wav), len(wav))]  # clip start and end count as cut points
    cuts, i = [], 0
    while i < len(edges) - 1:
        best = None
        for j in range(i + 1, len(edges)):
            loud = (edges[j][0] - edges[i][1]) / sr
            if loud > SHORT_MAX_S:
                break
            if loud >= SHORT_MIN_S:
                best = j
        if best is None:
            i += 1
            continue
        start = (edges[i][0] + edges[i][1]) // 2
        end = (edges[best][0] + edges[best][1]) // 2
        cuts.append((start, end))
        i = best
    return cuts


SHORT_MIN_SPEECH_S = 1.0  # a cut must hold this much speech by the metrics' own VAD (`Reference.speech_s`)


def short_clips(clips: list[Clip]) -> list[Clip]:
    """Every word-boundary cut (`word_cuts`) of the human clips, plus of LibriVox -0870 (same reader, not in the
    clean set), that holds at least SHORT_MIN_SPEECH_S of speech; named `<clip>@<start>-<end>` in seconds."""
    from qtts_sweep.metrics.audio import analyze_reference

    extra = POCKETSPHINX_DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.wav"
    sources = [c for c in clips if c.human]
    if extra.is_file():
        sources.append(Clip("librivox-0870", "librivox", True, str(extra), read_clip(extra)))
    out = []
    for clip in sources:
        for a, b in word_cuts(clip.wav):
            cut = clip.wav[a:b].copy()
            if analyze_reference(cut, SR).speech_s >= SHORT_MIN_SPEECH_S:
                out.append(Clip(f"{clip.name}@{a / SR:.2f}-{b / SR:.2f}", clip.voice, True, clip.source, cut))
    return out


def noise_under(clip: Clip, index: int, snr_db: float) -> np.ndarray:
    """White noise mixed under the whole clip at `snr_db` (a noisy generation, not a tail)."""
    rng = np.random.default_rng([SEED, index, 7])
    noise = rng.normal(size=len(clip.wav))
    return (clip.wav + noise / _rms(noise) * _rms(clip.wav) * 10 ** (-snr_db / 20)).astype(np.float32)


# The clip x variant scores both tests/test_metrics_audio.py and scripts/calibrate_metrics.py (through
# tests/test_calibration.py) compute, shared across the suite's processes (tests/helpers/shared.py): each key names
# the clip, its length, its index in the pool (the variants' random seed) and the variant.
def _key(kind: str, clip: Clip, index: int, variant: str = "") -> str:
    return f"{kind}/{clip.name}/{len(clip.wav)}/{index}/{variant}"


def shared_variants(clip: Clip, clips: list[Clip], index: int) -> dict[str, np.ndarray]:
    """`variants(clip, clips, index)`, computed once per test session."""
    from tests.helpers.shared import memo

    pool = ",".join(c.name for c in clips)
    return memo(_key("variants", clip, index, pool), lambda: variants(clip, clips, index))


def shared_audio_metrics(clip: Clip, index: int, variant: str, wav: np.ndarray, ref) -> tuple[dict[str, float], float]:
    """(`audio_metrics(wav, ref, SR)`, the CPU seconds it took where it was computed), once per test session; `wav`
    is `variant` of `clip` and `ref` the clip's `analyze_reference`."""
    import time

    from qtts_sweep.metrics.audio import audio_metrics
    from tests.helpers.shared import memo

    def compute() -> tuple[dict[str, float], float]:
        start = time.process_time()
        out = audio_metrics(wav, ref, SR)
        return out, time.process_time() - start

    return memo(_key("audio_metrics", clip, index, variant), compute)


def shared_mos(mos, clip: Clip, index: int, variant: str, wav: np.ndarray) -> float:
    """DNSMOS OVRL of `variant` of `clip` (`mos`: a MosPredictor), once per test session."""
    from tests.helpers.shared import memo

    return memo(_key("dnsmos_ovrl", clip, index, variant), lambda: mos.predict(wav, SR)["dnsmos_ovrl"])
