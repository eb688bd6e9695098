"""Speaker similarity: cosine of Resemblyzer speaker embeddings (weights ship inside the `resemblyzer` wheel).

What it is: `SpeakerSimilarity().embed(wav, sr)` turns a waveform into a 256-d speaker embedding with Resemblyzer's
GE2E LSTM encoder (`resemblyzer/pretrained.pt`, inside the PyPI package: nothing is downloaded), and
`similarity(a, b)` is their cosine. Resemblyzer embeddings are non-negative and L2-normalised, so the cosine lies
in [0, 1]; 0.0 is the worst value and is what silence, empty or all-NaN input gets.
What it is not: the WavLM-large + ECAPA-TDNN verifier that Seed-TTS-eval reports (its weights live on a hub, which
this project never calls at run time); numbers here compare checkpoints with each other, not with papers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from qtts_sweep.metrics import as_mono_float
from qtts_sweep.metrics.registry import CappedSimilarity, Metric

ENCODER_SR = 16000  # Resemblyzer's hparams.sampling_rate: its mel front end expects 16 kHz
EMBEDDING_DIM = 256  # Resemblyzer's hparams.model_embedding_size
MIN_SPEECH_S = 0.1  # less speech than this after Resemblyzer's VAD trimming: no voice to embed
SILENCE_PEAK = 1e-4  # peak below -80 dBFS: nothing audible; Resemblyzer's volume normalisation would divide by 0
MAX_EMBED_S = 120.0  # embed at most 2 min (a run-away generation): 1.6 s partials at 1.3 per second otherwise pile up

METRICS: dict[str, Metric] = {
    "spk_sim": Metric(
        "spk_sim",
        "higher",
        0.0,
        "",
        "cosine of Resemblyzer embeddings of gen and the target speaker's reference",
        goodness=CappedSimilarity(),  # capped at gt_spk_sim: nothing out-scores a real recording of the speaker
        weight=1.0,
        quality=True,
        table=True,
    ),
}


class SpeakerSimilarity:
    """Resemblyzer speaker encoder, loaded on first use; construct once and reuse.

    Args:
        device: torch device for the encoder ("cpu" by default: the LSTM is small and evaluation runs beside
            training jobs on the GPU).
        num_threads: torch intra-op threads while the encoder runs (the previous setting is restored after each
            call). One is fastest here: on a 2-core machine shared with another job, two threads ran the LSTM 4x
            slower than one, and over 10x slower while the other core was busy.
    """

    def __init__(self, device: str = "cpu", num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ValueError(f"`num_threads` must be >= 1, got {num_threads}. Fix: e.g. num_threads=1.")
        self.device = device
        self.num_threads = num_threads
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            with warnings.catch_warnings():
                # resemblyzer 0.1.4 imports scipy.ndimage.morphology, deprecated in SciPy 1.8 (still present in 1.17)
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder

            self._encoder = VoiceEncoder(device=self.device, verbose=False)
        return self._encoder

    def embed(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Speaker embedding of one waveform.

        Args:
            wav: mono waveform (1-D; integer PCM is scaled); NaN/Inf samples count as 0, samples are clipped
                to [-1, 1].
            sr: its sample rate in Hz (resampled to 16 kHz here).

        Returns:
            (256,) float32, L2-normalised; all zeros when there is no speech to embed (silence, empty, too short).

        Raises:
            ValueError: when `wav` is not 1-D or `sr` is not positive.
        """
        x = as_mono_float(wav)
        if not isinstance(sr, int | np.integer) or sr <= 0:
            raise ValueError(f"`sr` must be a positive integer sample rate, got {sr!r}. Fix: e.g. sr=24000.")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.clip(x[: int(MAX_EMBED_S * sr)], -1.0, 1.0)
        zeros = np.zeros(EMBEDDING_DIM, dtype=np.float32)
        if x.size == 0 or float(np.abs(x).max()) < SILENCE_PEAK:
            return zeros
        import soxr

        x = soxr.resample(x, int(sr), ENCODER_SR, quality="HQ") if sr != ENCODER_SR else x
        encoder = self._load()
        from resemblyzer import preprocess_wav  # already imported by _load, with its warnings silenced

        x = preprocess_wav(np.clip(x, -1.0, 1.0).astype(np.float32))  # volume normalisation + VAD trimming
        if x.size < MIN_SPEECH_S * ENCODER_SR or not np.isfinite(x).all():
            return zeros
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            emb = np.asarray(encoder.embed_utterance(x), dtype=np.float32)
        finally:
            torch.set_num_threads(previous)
        return emb if np.isfinite(emb).all() else zeros

    @staticmethod
    def similarity(a_emb: np.ndarray, b_emb: np.ndarray) -> float:
        """Cosine similarity of two embeddings; 0.0 (the worst value) when either is zero or not finite."""
        a = np.asarray(a_emb, dtype=np.float64).ravel()
        b = np.asarray(b_emb, dtype=np.float64).ravel()
        if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
            return 0.0
        den = float(np.linalg.norm(a) * np.linalg.norm(b))
        if den == 0.0:
            return 0.0
        cos = float(a @ b) / den
        return min(max(cos, -1.0), 1.0) if math.isfinite(cos) else 0.0
