"""Objective metrics for scoring a (checkpoint, LoRA scale) pair on held-out lines.

Modules, one job each:

- `audio`: signal metrics of a generated waveform against the line's ground-truth recording (duration, tempo
  drift, F0, voicing, mel-cepstral distortion, clipping, silence). numpy + pyworld + pysptk + librosa, CPU, offline.
- `speaker`: speaker similarity (cosine of Resemblyzer embeddings; the weights ship inside the PyPI wheel).
- `mos`: a MOS predictor (DNSMOS P.835 via `speechmos`; the ONNX files ship inside the PyPI wheel).
- `registry`: the `Metric` declaration (key, direction, worst value, goodness mapping, default weight, report
  column, optional compute hook) and the `Registry` every consumer reads metrics through.
- `catalog`: the built-in registry (`REGISTRY`): the code-level metrics declared there, the others in the modules
  above that compute them. docs/metrics.md documents every one.
- `objective`: pure functions on plain numbers: composite score, constraints, multi-objective vector, aggregation
  over lines. No model, no audio.

The package owns every metric's definition and how metrics become the objective. It does not own synthesis or
scoring a checkpoint (qtts_sweep.evaluate), never calls the TTS model, and logs nothing. Importing it, or any of
its modules, imports neither torch, librosa nor onnxruntime: models load lazily inside their objects.

Modules: `asr`, `audio`, `catalog`, `mos`, `objective`, `paired`, `registry`, `speaker`.
Imports from the package: util.
"""

from __future__ import annotations

import numpy as np


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
