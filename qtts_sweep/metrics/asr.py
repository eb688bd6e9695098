"""Optional intelligibility metric: WER with a Whisper model from a LOCAL folder the user already has.

Never downloads: `local_files_only=True`; a configured backend that cannot load is an error raised before any
synthesis starts. Backends: `whisper` (transformers pipeline over a Hugging Face Whisper folder) and
`faster_whisper` (a CTranslate2 folder; needs the `faster-whisper` package installed by the user).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any


class MetricBackendError(RuntimeError):
    """A configured metric backend cannot be loaded (missing folder, missing package)."""


def load_asr(backend: str, model_path: str | None, device: str) -> Callable[[Any], str]:
    """Return `transcribe(wav_24k) -> text` for the configured backend."""
    if not model_path or not Path(model_path).is_dir():
        raise MetricBackendError(
            f"eval.metrics.asr_backend={backend} needs eval.metrics.asr_model_path to be a local model folder, "
            f"got {model_path!r}. Fix: point it at a downloaded Whisper folder, or set asr_backend=none"
        )
    if backend == "whisper":
        from transformers import pipeline

        try:
            asr = pipeline(
                "automatic-speech-recognition", model=model_path, device=device, model_kwargs={"local_files_only": True}
            )
        except Exception as exc:
            raise MetricBackendError(f"cannot load Whisper from {model_path}: {exc}") from exc
        return lambda wav: asr({"raw": wav, "sampling_rate": 24000})["text"]
    if backend == "faster_whisper":
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MetricBackendError("asr_backend=faster_whisper needs `pip install faster-whisper`") from exc
        import librosa

        model = WhisperModel(model_path, device="cuda" if device.startswith("cuda") else "cpu")

        def transcribe(wav: Any) -> str:
            segments, _ = model.transcribe(librosa.resample(wav, orig_sr=24000, target_sr=16000))
            return " ".join(s.text for s in segments)

        return transcribe
    raise MetricBackendError(f"unknown asr backend {backend!r}")


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w\s']", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; 1.0 for an empty reference with output."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
