"""The built-in metric registry, `REGISTRY`: every metric the project scores, reports or optimises.

Signal, speaker and MOS metrics are declared beside the code that computes them (`audio.METRICS`,
`speaker.METRICS`, `mos.METRICS`); the code-level metrics that evaluation computes from generated codes and teacher
forcing, and the composite `score` itself, are declared here. Registration order is the order of the objective's
terms and of the report's columns. A new metric is one declaration (with `compute=` when it is a per-line audio
metric of its own) registered here or at run time with `REGISTRY.register`; docs/metrics.md documents each one.

Owns: which metrics exist. Does not own: what a declaration holds (`registry.py`) or how they are weighed
(`objective.py`).
"""

from __future__ import annotations

import math

from qtts_sweep.metrics import audio, mos, speaker
from qtts_sweep.metrics.registry import Accuracy, ExpError, Metric, OneMinusRate, Registry

CODE_METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        # Teacher-forced accuracies carry the signal on the tiny random preset, whose audio is noise.
        Metric(
            "talker_acc",
            "higher",
            0.0,
            "",
            "teacher-forced talker codebook-0 accuracy",
            goodness=Accuracy(),
            weight=1.0,
            table=True,
        ),
        Metric(
            "code_acc",
            "higher",
            0.0,
            "",
            "teacher-forced code-predictor accuracy (codebooks 1..15)",
            goodness=Accuracy(),
            weight=0.5,  # the code predictor refines a frame the talker already chose: a finer signal
            table=True,
        ),
        Metric(
            "no_eos_rate",
            "lower",
            1.0,
            "",
            "share of lines that hit the token cap without EOS",
            goodness=OneMinusRate(),
            weight=2.0,  # endless generation is the decisive failure of a too-high learning rate
            limit=0.05,  # a healthy model misses EOS on ~0.5% of lines; 5% is 1 line in 20 of a small val set
            table=True,
        ),
        Metric(
            "frame_count_error",
            "lower",
            math.log(audio.RATIO_LIMIT),
            "",
            "abs(ln(gen frames / gt frames))",
            # ln(1.22): a line 22% too long/short; the double-shift bug runs 3-4x long (ln 3.5 = 1.25)
            goodness=ExpError(0.2),
            weight=1.0,
            table=True,
        ),
    )
}
SCORE = Metric("score", "higher", 0.0, "", "composite_score: weighted mean of per-term goodness in [0, 1]")

REGISTRY = Registry(
    [*CODE_METRICS.values(), *audio.METRICS.values(), *speaker.METRICS.values(), *mos.METRICS.values(), SCORE]
)
