"""Inspects and converts audio files: content hash, format facts, signal checks, 24 kHz mono conversion.

Everything here is numpy + soundfile + soxr (no torch), so a fully cached `prepare` stays light.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TARGET_SR = 24000  # the 12 Hz codec asserts 24 kHz deep inside training; convert up front
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class AudioInfo:
    """Facts about one audio file; `error` is set when it cannot be decoded at all."""

    sha256: str
    sample_rate: int = 0
    channels: int = 0
    duration_s: float = 0.0
    peak: float = 0.0
    clipped_fraction: float = 0.0
    nonfinite: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and the file's sample rate."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data, int(sr)


def inspect_audio(path: Path, sha256: str) -> AudioInfo:
    """Decode the whole file (a truncated body fails here, not in training) and measure it."""
    import soundfile as sf

    if path.stat().st_size == 0:
        return AudioInfo(sha256, error="the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
        data, sr = read_audio(path)
    except Exception as exc:  # libsndfile's errors: not audio, truncated header, unsupported format
        return AudioInfo(sha256, error=f"cannot be decoded as audio ({str(exc).strip().splitlines()[-1]})")
    if data.shape[0] < info.frames:
        return AudioInfo(sha256, error=f"is truncated: header says {info.frames} frames, file holds {data.shape[0]}")
    if data.shape[0] == 0:
        return AudioInfo(sha256, sample_rate=sr, channels=data.shape[1], error="holds no samples")
    finite = np.isfinite(data)
    mono = data.mean(axis=1)
    clean = np.where(np.isfinite(mono), mono, 0.0)
    return AudioInfo(
        sha256=sha256,
        sample_rate=sr,
        channels=int(data.shape[1]),
        duration_s=data.shape[0] / sr,
        peak=float(np.abs(clean).max()),
        clipped_fraction=float((np.abs(data) >= CLIP_LEVEL).mean()),
        nonfinite=not bool(finite.all()),
    )


def to_24k_mono(path: Path) -> np.ndarray:
    """Mono float32 at 24 kHz: channels averaged, any rate resampled with soxr (high quality)."""
    import soxr

    data, sr = read_audio(path)
    mono = data.mean(axis=1).astype(np.float32)
    if sr != TARGET_SR:
        mono = soxr.resample(mono, sr, TARGET_SR, quality="HQ").astype(np.float32)
    return mono


def write_wav_24k(path: Path, wav: np.ndarray) -> None:
    """Atomic write of a 24 kHz float WAV (float keeps the resampled signal exact; no requantization)."""
    import soundfile as sf

    from qtts_sweep.util.fsio import atomic_file

    with atomic_file(path) as tmp:
        sf.write(str(tmp), wav, TARGET_SR, subtype="FLOAT", format="WAV")
