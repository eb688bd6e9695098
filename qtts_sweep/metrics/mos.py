"""MOS prediction with DNSMOS (P.835 SIG/BAK/OVRL and P.808), ONNX files shipped inside the `speechmos` wheel.

What it is: `MosPredictor().predict(wav, sr)` runs Microsoft's DNSMOS models from `speechmos` 0.0.1.1
(`speechmos/dnsmos_models/sig_bak_ovr.onnx` and `model_v8.onnx`, inside the PyPI package: nothing is downloaded)
with onnxruntime on the CPU, following `speechmos.dnsmos.DNSMOS.__call__`: 16 kHz audio, 9.01 s windows one
second apart (shorter clips are repeated to 9.01 s), per-window scores mapped by DNSMOS's published polynomials and
averaged. Two deliberate differences, both for bounded cost and finite output: at most `MAX_WINDOWS` windows spread
evenly over the clip (the reference scores every 1 s step), and input with nothing audible (empty, silence, all
NaN) gets the worst score 1.0 instead of what the network says about silence.
What it is not: UTMOS (the predictor the Qwen3-TTS report uses; its SSL weights are hub-hosted, never fetched
here). DNSMOS was trained on noise-suppressed speech: it is good at noise, reverberation and distortion, weaker at
prosody. Scores are on the 1-5 MOS scale, higher is better.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np

from qtts_sweep.metrics import as_mono_float
from qtts_sweep.metrics.registry import Linear, Metric

MODEL_SR = 16000  # DNSMOS models take 16 kHz audio (speechmos.dnsmos.SR)
WINDOW_S = 9.01  # DNSMOS input length in seconds (speechmos.dnsmos.INPUT_LENGTH)
HOP_S = 1.0  # window step of the reference implementation
MAX_WINDOWS = 12  # longer clips: 12 evenly spread windows instead of one per second (~0.2 s CPU per window)
MAX_INPUT_S = 300.0  # a run-away generation is scored on its first 5 minutes
SILENCE_PEAK = 1e-4  # peak below -80 dBFS: nothing to rate
MOS_MIN, MOS_MAX = 1.0, 5.0  # the MOS scale; the polynomial mapping can step slightly outside it
# DNSMOS repeats a clip shorter than its 9 s window: a short line is rated as a loop with a seam every repeat, and
# near-identical versions of a 2 s line ranged 2.4-3.1. It counts only on lines with this much ground-truth speech.
MOS_MIN_SPEECH_S = 2.5
P808_FRAME_TRIM = 160  # the reference drops the last 160 samples before the P.808 mel front end

METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric(
            "dnsmos_ovrl",
            "higher",
            MOS_MIN,
            "MOS",
            "DNSMOS P.835 overall quality",
            goodness=Linear(MOS_MIN, MOS_MAX),
            weight=0.5,
            quality=True,
            min_speech_s=MOS_MIN_SPEECH_S,
            table=True,
        ),
        Metric(
            "dnsmos_sig", "higher", MOS_MIN, "MOS", "DNSMOS P.835 speech signal quality", min_speech_s=MOS_MIN_SPEECH_S
        ),
        Metric(
            "dnsmos_bak",
            "higher",
            MOS_MIN,
            "MOS",
            "DNSMOS P.835 background (noise) quality",
            min_speech_s=MOS_MIN_SPEECH_S,
        ),
        Metric("dnsmos_p808", "higher", MOS_MIN, "MOS", "DNSMOS P.808 overall MOS", min_speech_s=MOS_MIN_SPEECH_S),
    )
}


class MosPredictor:
    """DNSMOS on onnxruntime's CPU provider, sessions created on first use; construct once and reuse.

    Args:
        num_threads: onnxruntime intra-op threads (small by default: evaluation shares the machine).
    """

    def __init__(self, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ValueError(f"`num_threads` must be >= 1, got {num_threads}. Fix: e.g. num_threads=1.")
        self.num_threads = num_threads
        self._dnsmos: Any = None

    def _load(self) -> Any:
        if self._dnsmos is None:
            import onnxruntime as ort
            from speechmos.dnsmos import DNSMOS

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.num_threads
            opts.inter_op_num_threads = 1
            models = resources.files("speechmos") / "dnsmos_models"

            def session(name: str) -> Any:
                with resources.as_file(models / name) as path:
                    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            # DNSMOS.__init__ builds its sessions with onnxruntime's defaults (all cores, any provider); build the
            # object without it and set the three attributes its methods use (speechmos 0.0.1.1, pinned).
            dnsmos = DNSMOS.__new__(DNSMOS)
            dnsmos.primary_model_path = "sig_bak_ovr.onnx"
            dnsmos.onnx_sess = session("sig_bak_ovr.onnx")
            dnsmos.p808_onnx_sess = session("model_v8.onnx")
            self._dnsmos = dnsmos
        return self._dnsmos

    def predict(self, wav: np.ndarray, sr: int) -> dict[str, float]:
        """DNSMOS scores of one waveform.

        Args:
            wav: mono waveform (1-D; integer PCM is scaled); NaN/Inf samples count as 0, samples are clipped
                to [-1, 1].
            sr: its sample rate in Hz (resampled to 16 kHz here).

        Returns:
            {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}: finite, in [1, 5]; all 1.0 when nothing
            is audible.

        Raises:
            ValueError: when `wav` is not 1-D or `sr` is not positive.
        """
        x = as_mono_float(wav)
        if not isinstance(sr, int | np.integer) or sr <= 0:
            raise ValueError(f"`sr` must be a positive integer sample rate, got {sr!r}. Fix: e.g. sr=24000.")
        worst = {name: spec.worst for name, spec in METRICS.items()}
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.clip(x[: int(MAX_INPUT_S * sr)], -1.0, 1.0)
        if x.size == 0 or float(np.abs(x).max()) < SILENCE_PEAK:
            return worst
        import soxr

        x = soxr.resample(x, int(sr), MODEL_SR, quality="HQ") if sr != MODEL_SR else x
        x = np.clip(x, -1.0, 1.0).astype(np.float32)
        window = int(WINDOW_S * MODEL_SR)
        if x.size < window:
            x = np.tile(x, math.ceil(window / x.size))  # the reference repeats short clips the same way
        n_steps = int(np.floor(x.size / MODEL_SR) - WINDOW_S) + 1  # the reference's window count
        starts = np.unique(np.linspace(0, max(n_steps - 1, 0), min(max(n_steps, 1), MAX_WINDOWS)).round().astype(int))
        scores = np.array([self._score_window(x[s * MODEL_SR : s * MODEL_SR + window]) for s in starts])
        out = dict(zip(METRICS, scores.mean(axis=0).tolist(), strict=True))
        return {k: min(max(v, MOS_MIN), MOS_MAX) if math.isfinite(v) else worst[k] for k, v in out.items()}

    def _score_window(self, segment: np.ndarray) -> tuple[float, float, float, float]:
        """(ovrl, sig, bak, p808) of one 9.01 s window, as in `speechmos.dnsmos.DNSMOS.__call__`."""
        dnsmos = self._load()
        features = segment[np.newaxis, :].astype(np.float32)
        p808_features = np.asarray(dnsmos.audio_melspec(audio=segment[:-P808_FRAME_TRIM]), dtype=np.float32)[None]
        p808 = float(dnsmos.p808_onnx_sess.run(None, {"input_1": p808_features})[0][0][0])
        sig_raw, bak_raw, ovr_raw = dnsmos.onnx_sess.run(None, {"input_1": features})[0][0]
        sig, bak, ovr = dnsmos.get_polyfit_val(sig_raw, bak_raw, ovr_raw, False)
        return float(ovr), float(sig), float(bak), float(p808)
