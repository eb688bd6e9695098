"""Objective metrics for scoring a (checkpoint, LoRA scale) pair on held-out lines.

Modules, one job each:

- `audio`: signal metrics of a generated waveform against the line's ground-truth recording (duration, tempo
  drift, F0, voicing, mel-cepstral distortion, clipping, silence). numpy + pyworld + pysptk + librosa, CPU, offline.
- `speaker`: speaker similarity (cosine of Resemblyzer embeddings; the weights ship inside the PyPI wheel).
- `mos`: a MOS predictor (DNSMOS P.835 via `speechmos`; the ONNX files ship inside the PyPI wheel).
- `objective`: pure functions on plain numbers: composite score, constraints, multi-objective vector, aggregation
  over lines. No model, no audio.

The package owns every metric's definition and how metrics become the objective. It does not own synthesis or
scoring a checkpoint (qtts_sweep.evaluate), never calls the TTS model, and logs nothing. Importing it, or any of
its modules, imports neither torch, librosa nor onnxruntime: models load lazily inside their objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Better = Literal["lower", "higher", "one", "zero"]


@dataclass(frozen=True)
class MetricSpec:
    """What one metric means and how to read it.

    Attributes:
        name: the key in the metrics dict.
        better: "lower" or "higher" for scored metrics; "one" for diagnostic ratios (best at 1, read on a log
            scale; their scored counterpart is an `*_error`), "zero" for signed diagnostics (best at 0).
        worst: the value reported when the metric is undefined for the input (silence, empty, NaN, no speech):
            never NaN or Inf, and no better than any value a real failure gets.
        unit: unit of the value ("" for unitless).
        description: one-line definition.
    """

    name: str
    better: Better
    worst: float
    unit: str
    description: str


def as_mono_float(wav: np.ndarray, name: str = "wav") -> np.ndarray:
    """A float64 copy of a mono waveform; integer PCM (int16/int32) is scaled to [-1, 1) as soundfile reads it.

    Raises:
        ValueError: when the array is not 1-D (a programming error: metrics take one channel).
    """
    x = np.asarray(wav)
    if x.ndim != 1:
        raise ValueError(
            f"`{name}` must be a mono waveform (1-D array), got shape {x.shape}. Fix: average the channels first."
        )
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    return x.astype(np.float64, copy=True)
