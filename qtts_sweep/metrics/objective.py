"""Turning a trial's metrics into what the sweep optimises: pure functions on plain numbers.

What it is: the composite score (one number, higher is better), Optuna-style constraints (<= 0 means satisfied),
a multi-objective vector with each objective's direction, and aggregation of per-line metrics over a split. Which
metrics exist, their directions, worst values, goodness mappings, default weights and default limits come from the
metric registry (`catalog.REGISTRY`); docs/metrics.md documents each one and the formula. No model, no audio, no
Optuna, no MLflow: everything here is tested with plain numbers. What it is not: computing the metrics
(`audio.py`, `speaker.py`, `mos.py`, synthesis), declaring them (`catalog.py`) or driving the study.
"""

from __future__ import annotations

import difflib
import math
import statistics
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from qtts_sweep.metrics.audio import RATIO_LIMIT
from qtts_sweep.metrics.catalog import REGISTRY

MissingPolicy = Literal["renormalize", "worst"]
Reference = Literal["ceiling", "ground_truth"]
# A ceiling goodness below this means the codec cannot express the term at all (e.g. a random codec's MCD at its
# worst): the ratio would be noise over ~0, so the term says nothing about the trial and is left out.
CEILING_FLOOR = 1e-3


class _Directions(Mapping[str, str]):
    """{metric key: "maximize" | "minimize"}, read live from the registry (a metric registered later counts)."""

    def __getitem__(self, key: str) -> str:
        metric = REGISTRY.get(key)
        if metric is None or metric.direction is None:
            raise KeyError(key)
        return metric.direction

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY.directions())

    def __len__(self) -> int:
        return len(REGISTRY.directions())


# Optuna study directions for every metric that has one (diagnostic ratios and signed slopes have none).
DIRECTIONS: Mapping[str, str] = _Directions()


class ObjectiveWeights:
    """Weights of the composite score: the registry's default weights with `overrides` on top.

    Args:
        overrides: {metric key: weight}; a key must be a registered metric with a goodness mapping. A weight of 0
            drops the term.
        spk_sim_cap_to_gt: cap a similarity term (goodness `CappedSimilarity`, i.e. spk_sim) at the ground truth's
            own similarity to the target speaker, so babble or over-steered output cannot out-score a real
            recording.
        missing: what a metric absent from the dict does. "renormalize": the term is left out and the remaining
            weights are renormalised (right when a backend is absent for every trial, e.g. no MOS model). "worst":
            the term counts with goodness 0 (right when a metric may be absent for some trials only, e.g. because
            their synthesis failed). Either way a metric that is present but NaN/Inf counts as worst.
        reference: "ceiling": quality terms (`Registry.quality_keys`) are scored relative to the codec ceiling
            when `composite_score` gets one; "ground_truth": every term against the recording as measured.

    Raises:
        ValueError: with every unknown key (did-you-mean) and invalid value at once.
    """

    def __init__(
        self,
        overrides: Mapping[str, float] | None = None,
        spk_sim_cap_to_gt: bool = True,
        missing: MissingPolicy = "renormalize",
        reference: Reference = "ceiling",
    ) -> None:
        overrides = dict(overrides or {})
        problems = [str(p) for p in REGISTRY.weight_problems(overrides)]
        if missing not in ("renormalize", "worst"):
            problems.append(f"`missing` = {missing!r}: must be 'renormalize' or 'worst'. Fix: missing=worst")
        if reference not in ("ceiling", "ground_truth"):
            problems.append(f"`reference` = {reference!r}: must be 'ceiling' or 'ground_truth'. Fix: reference=ceiling")
        if problems:
            raise ValueError("invalid objective weights:\n  - " + "\n  - ".join(problems))
        self._weights = {k: float(overrides.get(k, w)) for k, w in REGISTRY.default_weights().items()}
        self.spk_sim_cap_to_gt = spk_sim_cap_to_gt
        self.missing = missing
        self.reference = reference

    def weights(self) -> dict[str, float]:
        """{metric key: weight} for every term, in registry order."""
        return dict(self._weights)


class ConstraintLimits:
    """Upper limits for `constraint_violations`: the registry's default limits with `overrides` on top.

    Args:
        overrides: {`max_<metric key>`: limit or None}; any lower-is-better registered metric may be limited, None
            disables a constraint (docs/metrics.md gives the default limits and why).

    Raises:
        ValueError: with every unknown name and invalid limit at once.
    """

    def __init__(self, overrides: Mapping[str, float | None] | None = None) -> None:
        overrides = dict(overrides or {})
        problems = [str(p) for p in REGISTRY.limit_problems(overrides)]
        if problems:
            raise ValueError("invalid constraint limits:\n  - " + "\n  - ".join(problems))
        self._limits: dict[str, float | None] = {**REGISTRY.default_limits(), **overrides}

    def limits(self) -> dict[str, float | None]:
        """{`max_<key>`: limit} in registry order, then overrides of metrics without a default limit."""
        return dict(self._limits)


def _goodness(name: str, value: float, cap: float | None) -> float:
    """Map one metric to [0, 1], 1 = perfect; 0 for a non-finite value."""
    if not math.isfinite(value):
        return 0.0
    goodness = REGISTRY[name].goodness
    if goodness is None:  # unreachable: ObjectiveWeights admits only metrics with a goodness mapping
        raise KeyError(f"no goodness mapping for metric {name!r}")
    return goodness(value, cap if goodness.capped else None)


def _too_short(name: str, metrics: Mapping[str, float]) -> bool:
    """The metric is absent because no line had the speech it needs (`gt_speech_s_max` of a summary, or a
    line's own `gt_speech_s`): not measurable, which is not a failure."""
    longest = metrics.get("gt_speech_s_max", metrics.get("gt_speech_s"))
    return longest is not None and float(longest) < REGISTRY[name].min_speech_s


def composite_score(
    metrics: Mapping[str, float],
    weights: ObjectiveWeights,
    gt_spk_sim: float | None = None,
    ceiling: Mapping[str, float] | None = None,
) -> float:
    """One number per trial, higher is better, in [0, 1].

    Formula:
        score = sum_k w_k * g_k / sum_k w_k, over the terms k with w_k > 0 (and, with missing="renormalize",
        present in `metrics`), where the goodness g_k of metric value m_k is the metric's registered goodness
        mapping (docs/metrics.md lists them):

        - accuracies (talker_acc, code_acc): clamp(m, 0, 1)
        - rates (no_eos_rate): 1 - clamp(m, 0, 1)
        - errors (frame_count_error, duration_error, tempo_drift, f0_error, voicing_error, mcd_db):
          exp(-max(m, 0) / s_k), with the scale s_k of the metric's `ExpError`
        - similarities (spk_sim): clamp(min(m, gt_spk_sim), 0, 1) when weights.spk_sim_cap_to_gt and gt_spk_sim
          is given, else clamp(m, 0, 1)
        - MOS (dnsmos_ovrl): clamp((m - 1) / 4, 0, 1)
        - a term that is present but NaN/Inf, or missing under missing="worst": g_k = 0 (except a metric with a
          registered `min_speech_s` that no line was long enough for, per `gt_speech_s_max` / `gt_speech_s`:
          always left out).

        When no term is left (every weight 0, or every weighted metric missing under "renormalize") the score
        is 0.0, the worst value.

        Codec ceiling (weights.reference == "ceiling" and `ceiling` given): for a quality term k whose ceiling
        value c_k is present, g_k is replaced by min(1, g_k(m_k) / g_k(c_k)), so the codec's own loss costs
        nothing and only what the model loses beyond it counts; a term whose ceiling goodness is below
        CEILING_FLOOR is left out (the codec cannot express it). Other terms are unchanged.

    Args:
        metrics: aggregated metrics of a trial (`aggregate_lines` output or any dict with these keys).
        weights: the term weights and the missing-metric policy.
        gt_spk_sim: similarity of held-out ground-truth recordings to the target speaker (same encoder); ignored
            when None or not finite. It caps the ceiling's similarity too.
        ceiling: the same metrics measured on the ground truth's codec round trip (same lines, or the same line
            for a per-line score); None scores every term absolutely.

    Returns:
        The score, finite, in [0, 1].
    """
    cap = gt_spk_sim if weights.spk_sim_cap_to_gt and gt_spk_sim is not None and math.isfinite(gt_spk_sim) else None
    relative = set(REGISTRY.quality_keys()) if weights.reference == "ceiling" and ceiling is not None else set()
    total = weighted = 0.0
    for name, w in weights.weights().items():
        if w == 0:
            continue
        if name not in metrics:
            if weights.missing == "renormalize" or _too_short(name, metrics):
                continue
            g = 0.0
        else:
            g = _goodness(name, float(metrics[name]), cap)
        if name in relative and name in ceiling:
            g_ceiling = _goodness(name, float(ceiling[name]), cap)
            if g_ceiling < CEILING_FLOOR:
                continue
            g = min(1.0, g / g_ceiling)
        total += w
        weighted += w * g
    return weighted / total if total > 0 else 0.0


def line_scores(
    rows: list[dict], weights: ObjectiveWeights, ceiling_rows: list[dict] | None = None
) -> dict[tuple[str, int], float]:
    """The composite score of each (line, seed) alone, with the same weights, cap and reference as the trial's.

    Args:
        rows: a result's `per_line` rows ({"id", "seed", "metrics"}); each line's own `gt_spk_sim` caps it.
        weights: the trial's objective weights.
        ceiling_rows: the codec ceiling's per-line rows ({"id", "metrics"}), matched by line id.

    Returns:
        {(line id, seed): score in [0, 1]}, the unit a paired comparison of two trials is made over.
    """
    ceiling = {r["id"]: r["metrics"] for r in ceiling_rows or []}
    out = {}
    for r in rows:
        m = r["metrics"]
        out[(r["id"], int(r.get("seed", 0)))] = composite_score(m, weights, m.get("gt_spk_sim"), ceiling.get(r["id"]))
    return out


class LineObjective:
    """A trial's objective recomputed on any multiset of its held-out lines: what the winner was chosen by
    (`composite_score` of `aggregate_lines` over its (line, seed) rows, relative to the codec ceiling of the same
    lines), for a bootstrap that resamples whole lines. On every line once it equals the trial's own objective.

    Args:
        rows: a result's `per_line` rows ({"id", "seed", "metrics"}).
        weights: the trial's objective weights.
        ceiling_rows: the codec ceiling's per-line rows ({"id", "metrics"}), or None.
    """

    def __init__(self, rows: list[dict], weights: ObjectiveWeights, ceiling_rows: list[dict] | None = None):
        import numpy as np

        self.weights = weights
        self.lines = sorted({r["id"] for r in rows})
        self._trial = self._tables([(r["id"], r["metrics"]) for r in rows], np)
        ceiling = [(r["id"], r["metrics"]) for r in ceiling_rows or [] if r["id"] in set(self.lines)]
        self._ceiling = self._tables(ceiling, np) if ceiling_rows is not None else None
        self._memo: dict[tuple, Any] = {}

    def _tables(self, rows: list[tuple[str, dict]], np) -> tuple[list[str], Any, Any, Any]:
        """(metric names, per-line sums, per-line counts, per-line max gt_speech_s) over `self.lines`."""
        col = {line: i for i, line in enumerate(self.lines)}
        names = sorted({k for _, m in rows for k in m})
        sums = np.zeros((len(self.lines), len(names)))
        counts = np.zeros((len(self.lines), len(names)))
        speech = np.full(len(self.lines), -np.inf)
        for line, metrics in rows:
            for j, name in enumerate(names):
                if name not in metrics:
                    continue
                v = float(metrics[name])
                if not math.isfinite(v):
                    if name not in REGISTRY:
                        continue
                    v = REGISTRY[name].worst
                sums[col[line], j] += v
                counts[col[line], j] += 1
            if "gt_speech_s" in metrics:
                speech[col[line]] = max(speech[col[line]], float(metrics["gt_speech_s"]))
        return names, sums, counts, speech

    @staticmethod
    def _summaries(table: tuple, c: Any) -> list[dict[str, float]]:
        import numpy as np

        names, sums, counts, speech = table
        total, n = c @ sums, c @ counts
        out = []
        for i in range(c.shape[0]):
            summary = {name: float(total[i, j] / n[i, j]) for j, name in enumerate(names) if n[i, j] > 0}
            drawn = speech[c[i] > 0]
            if drawn.size and np.isfinite(drawn).any():
                summary["gt_speech_s_max"] = float(drawn.max())
            out.append(summary)
        return out

    def on(self, lines: list[str], counts: Any) -> Any:
        """The objective on each resample: `counts` (resamples, len(lines)) says how often each line is drawn.

        Scored once per distinct resample (a bootstrap of n lines draws at most C(2n-1, n) distinct multisets: 3
        for 2 lines, 35 for 4, against 2000 resamples) and once per `counts` (`choose` compares the best trial
        with every other one on the same resamples): the same numbers, without a Python-level composite score
        per resample each time."""
        import numpy as np

        c = np.zeros((counts.shape[0], len(self.lines)))
        index = {line: i for i, line in enumerate(self.lines)}
        for k, line in enumerate(lines):
            c[:, index[line]] = counts[:, k]
        key = (c.shape, c.tobytes())
        if key not in self._memo:
            distinct, inverse = np.unique(c, axis=0, return_inverse=True)
            trial = self._summaries(self._trial, distinct)
            ceiling = self._summaries(self._ceiling, distinct) if self._ceiling is not None else [None] * len(trial)
            scores = np.array(
                [
                    composite_score(s, self.weights, s.get("gt_spk_sim"), ceil or None)
                    for s, ceil in zip(trial, ceiling, strict=True)
                ]
            )
            self._memo = {key: scores[inverse.reshape(-1)]}  # the last one asked for: what `choose` asks again
        return self._memo[key].copy()


def constraint_violations(metrics: dict[str, float], limits: ConstraintLimits) -> dict[str, float]:
    """Optuna `constraints_func` values: metric minus its limit, so a value <= 0 means satisfied.

    Args:
        metrics: aggregated metrics of a trial.
        limits: the limits; a None limit is left out of the result.

    Returns:
        {metric key: value - limit} in `ConstraintLimits.limits()` order (pass `list(result.values())` to Optuna). A
        metric that is missing or NaN/Inf is taken at its worst value, so the trial is infeasible: feasibility is
        never assumed for what was not measured.
    """
    out: dict[str, float] = {}
    for field_name, limit in limits.limits().items():
        if limit is None:
            continue
        name = field_name.removeprefix("max_")
        value = metrics.get(name)
        out[name] = REGISTRY[name].finite(value) - float(limit)
    return out


def objective_vector(metrics: dict[str, float], names: list[str], gt_spk_sim: float | None = None) -> list[float]:
    """Values for a multi-objective study, one per name, in order; directions are `DIRECTIONS[name]`.

    Args:
        metrics: aggregated metrics of a trial.
        names: objective metric keys, each a key of `DIRECTIONS` (e.g. ["duration_error", "spk_sim"]).
        gt_spk_sim: when given and finite, capped similarities (spk_sim) are capped at it (as in `composite_score`).

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
    capped = REGISTRY.capped_keys() if gt_spk_sim is not None and math.isfinite(gt_spk_sim) else []
    out = []
    for name in names:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            value = REGISTRY[name].worst
        elif name in capped:
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
        metric's worst value when the metric is registered, and is left out otherwise. Zero lines give
        {"n_lines": 0.0} (every metric missing); one line gives std 0.0. Every value is finite.
    """
    values: dict[str, list[float]] = {}
    for line in per_line:
        for name, value in line.items():
            v = float(value)
            if not math.isfinite(v):
                if name not in REGISTRY:
                    continue
                v = REGISTRY[name].worst
            values.setdefault(name, []).append(v)
    out: dict[str, float] = {"n_lines": float(len(per_line))}
    for name, vs in values.items():
        try:
            mean = statistics.fmean(vs)
            std = statistics.pstdev(vs) if len(vs) > 1 else 0.0
        except OverflowError:  # finite values whose sum overflows (|v| ~ 1e308)
            mean = std = math.inf
        if not (math.isfinite(mean) and math.isfinite(std)):
            if name not in REGISTRY:
                continue
            mean, std = REGISTRY[name].worst, 0.0
        out[name] = mean
        out[f"{name}_std"] = std
    return out


def frame_count_error(gen_frames: int, gt_frames: int) -> float:
    """abs(ln(gen_frames / gt_frames)), the ratio clamped to [0.1, 10]; worst (ln 10) when either count is <= 0."""
    if gen_frames <= 0 or gt_frames <= 0:
        return REGISTRY["frame_count_error"].worst
    ratio = min(max(gen_frames / gt_frames, 1.0 / RATIO_LIMIT), RATIO_LIMIT)
    return abs(math.log(ratio))
