"""Turning a trial's metrics into what the sweep optimises: pure functions on plain numbers.

What it is: the composite score (one number, higher is better), Optuna-style constraints (<= 0 means satisfied),
a multi-objective vector with each objective's direction, aggregation of per-line metrics over a split, and the
table of every metric's meaning (`ALL_METRICS`). No model, no audio, no Optuna, no MLflow: everything here is
tested with plain numbers. What it is not: computing the metrics (`audio.py`, `speaker.py`, `mos.py`, synthesis)
or driving the study.

Metric keys this module reads, besides those of `audio.METRICS`, `speaker.METRICS` and `mos.METRICS`
(`GENERATION_METRICS`, produced by evaluation/synthesis):

| key | better | worst | definition |
|---|---|---|---|
| talker_acc | higher | 0 | teacher-forced accuracy of the talker's codebook-0 predictions on held-out lines |
| code_acc | higher | 0 | teacher-forced accuracy of the code predictor (codebooks 1..15) on held-out lines |
| no_eos_rate | lower | 1 | share of lines whose generation hit the token cap without EOS (per line: 0 or 1) |
| frame_count_error | lower | 2.303 | abs(ln(generated frames / ground-truth frames)), ratio clamped to [0.1, 10] |

The teacher-forced accuracies carry the signal on the tiny random preset, whose audio is noise.
"""

from __future__ import annotations

import difflib
import math
import statistics
from dataclasses import dataclass, fields
from typing import Literal

from qtts_sweep.metrics import MetricSpec
from qtts_sweep.metrics.audio import METRICS as AUDIO_METRICS
from qtts_sweep.metrics.audio import RATIO_LIMIT
from qtts_sweep.metrics.mos import METRICS as MOS_METRICS
from qtts_sweep.metrics.mos import MOS_MAX, MOS_MIN
from qtts_sweep.metrics.speaker import METRICS as SPEAKER_METRICS

GENERATION_METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("talker_acc", "higher", 0.0, "", "teacher-forced talker codebook-0 accuracy"),
        MetricSpec("code_acc", "higher", 0.0, "", "teacher-forced code-predictor accuracy (codebooks 1..15)"),
        MetricSpec("no_eos_rate", "lower", 1.0, "", "share of lines that hit the token cap without EOS"),
        MetricSpec("frame_count_error", "lower", math.log(RATIO_LIMIT), "", "abs(ln(gen frames / gt frames))"),
    )
}
SCORE = MetricSpec("score", "higher", 0.0, "", "composite_score: weighted mean of per-term goodness in [0, 1]")
ALL_METRICS: dict[str, MetricSpec] = {
    **GENERATION_METRICS,
    **AUDIO_METRICS,
    **SPEAKER_METRICS,
    **MOS_METRICS,
    SCORE.name: SCORE,
}
# Optuna study directions for every metric that has one (diagnostic ratios and signed slopes have none).
DIRECTIONS: dict[str, str] = {
    name: "maximize" if spec.better == "higher" else "minimize"
    for name, spec in ALL_METRICS.items()
    if spec.better in ("lower", "higher")
}

# Goodness of an error e is exp(-e / scale): 1 at e = 0, 1/e (0.37) at e = scale. Each scale is roughly the error a
# clean line stays well below and a clear failure exceeds (tests/test_metrics_audio.py prints both on real speech).
ERROR_SCALES: dict[str, float] = {
    "frame_count_error": 0.2,  # ln(1.22): a line 22% too long/short; double-shift runs 3-4x long (ln 3.5 = 1.25)
    "duration_error": 0.2,  # same unit as frame_count_error, measured on speech only
    "tempo_drift": 0.2,  # clean/vocoded <= 0.11, uniform 1.3x stretch <= 0.1, accelerating lines >= 0.35
    "f0_error": 3.0,  # semitones: clean <= 1.4 (after a vocoder round trip), +4 st shift >= 3.9, flat F0 >= 3.4
    "voicing_error": 0.2,  # clean/vocoded <= 0.11, babble tail >= 0.2
    "mcd_db": 6.0,  # dB: good TTS vs ground truth is typically 4-6 dB, broken output > 10 dB
}
ACCURACY_TERMS = ("talker_acc", "code_acc")  # goodness = the accuracy itself
RATE_TERMS = ("no_eos_rate",)  # goodness = 1 - rate
SPK_SIM = "spk_sim"  # goodness = similarity (capped at the ground truth's), clamped to [0, 1]
MOS = "dnsmos_ovrl"  # goodness = (MOS - 1) / 4 on the 1-5 MOS scale
MissingPolicy = Literal["renormalize", "worst"]


@dataclass
class ObjectiveWeights:
    """Weights of the composite score; each weight field is named after the metric key it weighs.

    A weight of 0 drops the term. The defaults favour the failures shared/DOMAIN.md reports as decisive: no EOS
    (weight 2) and length/speed (the double-shift bug), then similarity, then the finer signal measures.

    Attributes:
        talker_acc: teacher-forced talker accuracy (carries the signal on the tiny preset).
        code_acc: teacher-forced code-predictor accuracy.
        no_eos_rate: share of lines without EOS.
        frame_count_error: abs(ln(gen frames / gt frames)).
        duration_error: abs(ln(speech duration ratio)).
        tempo_drift: progressive speed-up or slow-down within a line.
        f0_error: intonation error in semitones.
        voicing_error: voiced/unvoiced disagreement along the alignment.
        mcd_db: mel-cepstral distortion.
        spk_sim: speaker similarity to the target speaker.
        dnsmos_ovrl: predicted MOS (DNSMOS overall).
        spk_sim_cap_to_gt: cap speaker similarity at the ground truth's own similarity to the target speaker, so
            babble or over-steered output cannot out-score a real recording.
        missing: what a metric absent from the dict does. "renormalize": the term is left out and the remaining
            weights are renormalised (right when a backend is absent for every trial, e.g. no MOS model). "worst":
            the term counts with goodness 0 (right when a metric may be absent for some trials only, e.g. because
            their synthesis failed). Either way a metric that is present but NaN/Inf counts as worst.
    """

    talker_acc: float = 1.0
    code_acc: float = 0.5
    no_eos_rate: float = 2.0
    frame_count_error: float = 1.0
    duration_error: float = 1.0
    tempo_drift: float = 1.0
    f0_error: float = 0.5
    voicing_error: float = 0.5
    mcd_db: float = 0.5
    spk_sim: float = 1.0
    dnsmos_ovrl: float = 0.5
    spk_sim_cap_to_gt: bool = True
    missing: MissingPolicy = "renormalize"

    def __post_init__(self) -> None:
        problems = [
            f"`{name}` = {value!r}: a weight must be a finite number >= 0. Fix: e.g. {name}=1.0 (0 drops the term)"
            for name, value in self.weights().items()
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
        ]
        if self.missing not in ("renormalize", "worst"):
            problems.append(f"`missing` = {self.missing!r}: must be 'renormalize' or 'worst'. Fix: missing=worst")
        if problems:
            raise ValueError("invalid objective weights:\n  - " + "\n  - ".join(problems))

    def weights(self) -> dict[str, float]:
        """{metric key: weight} for every term."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("spk_sim_cap_to_gt", "missing")}


@dataclass
class ConstraintLimits:
    """Upper limits for `constraint_violations`; None disables a constraint.

    Attributes:
        max_no_eos_rate: share of lines allowed to run to the token cap (upstream reports ~0.5% on a healthy
            model, #118; 5% leaves room for small validation sets: 1 line in 20).
        max_tempo_drift: progressive speed change within a line (on the test clips: clean <= 0.11, uniform 1.3x
            stretch <= 0.1, 1.0 -> 1.25 -> 1.5 and 0.8 -> 1.0 -> 1.25 accelerations >= 0.35). Natural variation
            between two real readings of a line is not measured yet: recalibrate on real model output.
        max_duration_error: abs(ln(speech duration ratio)) averaged over lines; 0.25 = about 28% too long/short.
        max_frame_count_error: abs(ln(gen frames / gt frames)) averaged over lines.
    """

    max_no_eos_rate: float | None = 0.05
    max_tempo_drift: float | None = 0.3
    max_duration_error: float | None = 0.25
    max_frame_count_error: float | None = None

    def __post_init__(self) -> None:
        problems = [
            f"`{name}` = {value!r}: a limit must be a finite number >= 0 or None. Fix: e.g. {name}=0.1"
            for name, value in self.limits().items()
            if value is not None
            and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0)
        ]
        if problems:
            raise ValueError("invalid constraint limits:\n  - " + "\n  - ".join(problems))

    def limits(self) -> dict[str, float | None]:
        """{field name: limit} in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _clamp01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _goodness(name: str, value: float, gt_spk_sim: float | None) -> float:
    """Map one metric to [0, 1], 1 = perfect; strictly monotone in the metric within its meaningful range."""
    if not math.isfinite(value):
        return 0.0
    if name in ACCURACY_TERMS:
        return _clamp01(value)
    if name in RATE_TERMS:
        return 1.0 - _clamp01(value)
    if name in ERROR_SCALES:
        return math.exp(-max(value, 0.0) / ERROR_SCALES[name])
    if name == SPK_SIM:
        return _clamp01(value if gt_spk_sim is None else min(value, gt_spk_sim))
    if name == MOS:
        return _clamp01((value - MOS_MIN) / (MOS_MAX - MOS_MIN))
    raise KeyError(f"no goodness mapping for metric {name!r}")  # unreachable: weights() lists only mapped terms


def composite_score(metrics: dict[str, float], weights: ObjectiveWeights, gt_spk_sim: float | None = None) -> float:
    """One number per trial, higher is better, in [0, 1].

    Formula:
        score = sum_k w_k * g_k / sum_k w_k, over the terms k with w_k > 0 (and, with missing="renormalize",
        present in `metrics`), where the goodness g_k of metric value m_k is

        - accuracies (talker_acc, code_acc): clamp(m, 0, 1)
        - no_eos_rate: 1 - clamp(m, 0, 1)
        - errors (frame_count_error, duration_error, tempo_drift, f0_error, voicing_error, mcd_db):
          exp(-max(m, 0) / s_k), with s_k from `ERROR_SCALES`
        - spk_sim: clamp(min(m, gt_spk_sim), 0, 1) when weights.spk_sim_cap_to_gt and gt_spk_sim is given,
          else clamp(m, 0, 1)
        - dnsmos_ovrl: clamp((m - 1) / 4, 0, 1)
        - a term that is present but NaN/Inf, or missing under missing="worst": g_k = 0.

        When no term is left (every weight 0, or every weighted metric missing under "renormalize") the score
        is 0.0, the worst value.

    Args:
        metrics: aggregated metrics of a trial (`aggregate_lines` output or any dict with these keys).
        weights: the term weights and the missing-metric policy.
        gt_spk_sim: similarity of held-out ground-truth recordings to the target speaker (same encoder); ignored
            when None or not finite.

    Returns:
        The score, finite, in [0, 1].
    """
    cap = gt_spk_sim if weights.spk_sim_cap_to_gt and gt_spk_sim is not None and math.isfinite(gt_spk_sim) else None
    total = weighted = 0.0
    for name, w in weights.weights().items():
        if w == 0:
            continue
        if name not in metrics:
            if weights.missing == "renormalize":
                continue
            g = 0.0
        else:
            g = _goodness(name, float(metrics[name]), cap)
        total += w
        weighted += w * g
    return weighted / total if total > 0 else 0.0


def constraint_violations(metrics: dict[str, float], limits: ConstraintLimits) -> dict[str, float]:
    """Optuna `constraints_func` values: metric minus its limit, so a value <= 0 means satisfied.

    Args:
        metrics: aggregated metrics of a trial.
        limits: the limits; a None limit is left out of the result.

    Returns:
        {metric key: value - limit} in `ConstraintLimits` field order (pass `list(result.values())` to Optuna). A
        metric that is missing or NaN/Inf is taken at its worst value, so the trial is infeasible: feasibility is
        never assumed for what was not measured.
    """
    out: dict[str, float] = {}
    for field_name, limit in limits.limits().items():
        if limit is None:
            continue
        name = field_name.removeprefix("max_")
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            value = ALL_METRICS[name].worst
        out[name] = float(value) - float(limit)
    return out


def objective_vector(metrics: dict[str, float], names: list[str], gt_spk_sim: float | None = None) -> list[float]:
    """Values for a multi-objective study, one per name, in order; directions are `DIRECTIONS[name]`.

    Args:
        metrics: aggregated metrics of a trial.
        names: objective metric keys, each a key of `DIRECTIONS` (e.g. ["duration_error", "spk_sim"]).
        gt_spk_sim: when given and finite, spk_sim is capped at it (as in `composite_score`).

    Returns:
        Finite floats; a metric that is missing or NaN/Inf gets its worst value.

    Raises:
        ValueError: for a name without a direction (unknown, or a diagnostic ratio such as duration_ratio).
    """
    unknown = [n for n in names if n not in DIRECTIONS]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, list(DIRECTIONS), n=1)
            hints.append(f"`{n}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
        raise ValueError(
            f"no objective direction for {', '.join(hints)}. Fix: use metric keys with a direction: "
            f"{', '.join(sorted(DIRECTIONS))}"
        )
    out = []
    for name in names:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            value = ALL_METRICS[name].worst
        elif name == SPK_SIM and gt_spk_sim is not None and math.isfinite(gt_spk_sim):
            value = min(value, gt_spk_sim)
        out.append(float(value))
    return out


def aggregate_lines(per_line: list[dict[str, float]]) -> dict[str, float]:
    """Mean and spread of every metric over the lines of a split.

    Args:
        per_line: one metrics dict per line (e.g. `audio_metrics` plus spk_sim, dnsmos_*, no_eos_rate as 0/1).

    Returns:
        {"n_lines": number of lines, "<key>": mean, "<key>_std": population standard deviation} for every key that
        appears in any line. A line without a key does not count for that key. A NaN/Inf value counts as the
        metric's worst value when the metric is known (`ALL_METRICS`), and is left out otherwise. Zero lines give
        {"n_lines": 0.0} (every metric missing); one line gives std 0.0. Every value is finite.
    """
    values: dict[str, list[float]] = {}
    for line in per_line:
        for name, value in line.items():
            v = float(value)
            if not math.isfinite(v):
                if name not in ALL_METRICS:
                    continue
                v = ALL_METRICS[name].worst
            values.setdefault(name, []).append(v)
    out: dict[str, float] = {"n_lines": float(len(per_line))}
    for name, vs in values.items():
        try:
            mean = statistics.fmean(vs)
            std = statistics.pstdev(vs) if len(vs) > 1 else 0.0
        except OverflowError:  # finite values whose sum overflows (|v| ~ 1e308)
            mean = std = math.inf
        if not (math.isfinite(mean) and math.isfinite(std)):
            if name not in ALL_METRICS:
                continue
            mean, std = ALL_METRICS[name].worst, 0.0
        out[name] = mean
        out[f"{name}_std"] = std
    return out


def frame_count_error(gen_frames: int, gt_frames: int) -> float:
    """abs(ln(gen_frames / gt_frames)), the ratio clamped to [0.1, 10]; worst (ln 10) when either count is <= 0."""
    if gen_frames <= 0 or gt_frames <= 0:
        return GENERATION_METRICS["frame_count_error"].worst
    ratio = min(max(gen_frames / gt_frames, 1.0 / RATIO_LIMIT), RATIO_LIMIT)
    return abs(math.log(ratio))
