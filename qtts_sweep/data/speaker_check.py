"""One speaker, checked: clips whose voice is far from the dataset's own voice, found before any training.

A LoRA voice learns one speaker; a folder that mixes readers trains a blend. Every clip is embedded with the
Resemblyzer encoder the metrics use (qtts_sweep.metrics.speaker, weights inside its wheel, CPU), embeddings are
cached by audio content hash like the codec codes, and a clip is an outlier when its cosine similarity to the
dataset's centroid lies below `median - max(MIN_GAP, K_SIGMA * robust sigma)` (sigma = 1.4826 * MAD). The
centroid is computed twice: the second time without the first pass's outliers, so a large minority of foreign
clips does not drag it towards themselves.

Calibrated on real voices (the 80 espeak demo clips of one voice, alone and mixed with CMU ARCTIC, five LibriVox
clips of one reader and three pocketsphinx speakers): one voice's clips sat at most 0.114 below the median, other
speakers at least 0.14 below it (0.19 once the centroid is not diluted by them); MIN_GAP sits between the two.
Not here: what happens to an outlier (prepare.py, by `data.speaker_check`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtts_sweep.util.fsio import atomic_file

MIN_GAP = 0.125  # cosine below the median: between one voice's widest gap and another speaker's (docstring)
K_SIGMA = 2.5  # robust standard deviations below the median
MIN_CLIPS = 5  # fewer clips: no centroid worth comparing against, nothing is flagged
CACHE_TAG = "resemblyzer-ge2e"  # cache folder name: embeddings depend on the encoder only


@dataclass(frozen=True)
class SpeakerOutlier:
    where: str  # "file:line" of the row
    similarity: float
    median: float
    threshold: float

    def rule(self) -> str:
        return (
            f"speaker similarity to the dataset's voice is below {self.threshold:.2f} (dataset median "
            f"{self.median:.2f}): another speaker?"
        )

    def __str__(self) -> str:
        return f"{self.where}: similarity {self.similarity:.2f}; {self.rule()}"


def cached_embeddings(
    items: list[tuple[str, str, Callable[[], np.ndarray]]], cache_dir: Path, embed: Callable[[np.ndarray], np.ndarray]
) -> dict[str, np.ndarray]:
    """{key: embedding} for `(key, content sha256, load 24 kHz waveform)` items; only uncached clips are loaded."""
    folder = cache_dir / CACHE_TAG
    out = {}
    for key, sha, load in items:
        path = folder / f"{sha}.npy"
        if path.is_file():
            out[key] = np.load(path)
            continue
        emb = np.asarray(embed(load()), dtype=np.float32)
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, emb)
        out[key] = emb
    return out


def _scores(emb: np.ndarray, keep: np.ndarray) -> np.ndarray:
    centroid = emb[keep].mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    return emb @ centroid


def _threshold(sims: np.ndarray) -> tuple[float, float]:
    median = float(np.median(sims))
    sigma = 1.4826 * float(np.median(np.abs(sims - median)))
    return median, median - max(MIN_GAP, K_SIGMA * sigma)


def speaker_outliers(embeddings: dict[str, np.ndarray]) -> list[SpeakerOutlier]:
    """Clips whose similarity to the dataset's centroid is an outlier (see the module docstring), worst first."""
    if len(embeddings) < MIN_CLIPS:
        return []
    keys = list(embeddings)
    emb = np.stack([embeddings[k] for k in keys])
    sims = _scores(emb, np.ones(len(keys), dtype=bool))
    median, thr = _threshold(sims)
    inliers = sims >= thr
    if inliers.sum() >= MIN_CLIPS:
        sims = _scores(emb, inliers)
        median, thr = _threshold(sims)
    found = [SpeakerOutlier(k, float(s), median, thr) for k, s in zip(keys, sims, strict=True) if s < thr]
    return sorted(found, key=lambda o: o.similarity)
