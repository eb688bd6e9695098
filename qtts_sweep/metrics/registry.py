"""The metric registry: what each metric key means and how it counts, declared once per metric.

A `Metric` declares its key, direction, unit, definition, the value it takes when undefined (`worst`), its
goodness mapping to [0, 1] and default weight in the composite objective, an optional default constraint limit,
whether the report table shows it, and, for a per-line audio metric computed by its own function, that function
(`compute`). Everything that reads metrics by name derives from a `Registry`: the composite score, constraints,
multi-objective directions and aggregation (`objective.py`), the objective config validation, the report table,
the evaluation cache key (`digest`).

Owns: the `Metric` type, the goodness mappings, the `Registry` container and its rule checks. Does not own: the
built-in declarations (`catalog.py` and the modules that compute them), computing metrics, weighing them
(`objective.py`). Imports nothing heavy: the config schema reads it.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from qtts_sweep.util.problems import Problem

Better = Literal["lower", "higher", "one", "zero"]
# compute(gen, ref, sr) -> value. gen: the generated waveform (mono float); ref: the line's ground truth as
# `audio.Reference` (analysed once per process); sr: the sample rate of both.
ComputeHook = Callable[[Any, Any, int], float]


def clamp01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


class Goodness(Protocol):
    """Maps a finite metric value to [0, 1], 1 = perfect, monotone in the metric's direction."""

    capped: bool  # True: the value is first capped at the ground truth's own level (`Registry.capped_keys`)

    def __call__(self, value: float, cap: float | None = None) -> float: ...

    def formula(self, key: str) -> str: ...


@dataclass(frozen=True)
class Accuracy:
    """g = clamp(m, 0, 1): a share of correct predictions is already a goodness."""

    capped = False

    def __call__(self, value: float, cap: float | None = None) -> float:
        return clamp01(value)

    def formula(self, key: str) -> str:
        return f"clamp({key}, 0, 1)"


@dataclass(frozen=True)
class OneMinusRate:
    """g = 1 - clamp(m, 0, 1): a failure rate."""

    capped = False

    def __call__(self, value: float, cap: float | None = None) -> float:
        return 1.0 - clamp01(value)

    def formula(self, key: str) -> str:
        return f"1 - clamp({key}, 0, 1)"


@dataclass(frozen=True)
class ExpError:
    """g = exp(-max(m, 0) / scale): 1 at no error, 1/e (0.37) at an error of `scale`.

    `scale` is roughly the error a clean line stays well below and a clear failure exceeds.
    """

    scale: float
    capped = False

    def __call__(self, value: float, cap: float | None = None) -> float:
        return math.exp(-max(value, 0.0) / self.scale)

    def formula(self, key: str) -> str:
        return f"exp(-max({key}, 0) / {self.scale:g})"


@dataclass(frozen=True)
class CappedSimilarity:
    """g = clamp(min(m, cap), 0, 1): a similarity, capped at the ground truth's own similarity when known."""

    capped = True

    def __call__(self, value: float, cap: float | None = None) -> float:
        return clamp01(value if cap is None else min(value, cap))

    def formula(self, key: str) -> str:
        return f"clamp(min({key}, gt_{key}), 0, 1)"


@dataclass(frozen=True)
class Linear:
    """g = clamp((m - low) / (high - low), 0, 1): a score on a fixed scale such as MOS 1..5."""

    low: float
    high: float
    capped = False

    def __call__(self, value: float, cap: float | None = None) -> float:
        return clamp01((value - self.low) / (self.high - self.low))

    def formula(self, key: str) -> str:
        return f"clamp(({key} - {self.low:g}) / {self.high - self.low:g}, 0, 1)"


def _bad_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0


@dataclass(frozen=True)
class Metric:
    """One metric key: what it means and how every consumer treats it.

    Attributes:
        key: the key in the per-line and aggregated metrics dicts (and in MLflow).
        better: "lower" or "higher" for scored metrics (these have an Optuna direction); "one" for diagnostic
            ratios (best at 1, read on a log scale; their scored counterpart is an `*_error`), "zero" for signed
            diagnostics (best at 0).
        worst: the value reported when the metric is undefined for the input (silence, empty, NaN, no speech) and
            what aggregation, constraints and objective vectors use for a missing or non-finite value: never NaN or
            Inf, and no better than any value a real failure gets.
        unit: unit of the value ("" for unitless).
        description: one-line definition (docs/metrics.md has the long form).
        goodness: mapping to [0, 1] for the composite objective; None keeps the metric out of it.
        weight: default weight in the composite (0 = not in it unless a config gives it a weight).
        limit: default upper limit as a constraint (`max_<key>` in eval.objective.constraints); None = none.
        table: shown as a column of the report's top-trials table and the promotion summary.
        compute: for a per-line audio metric with its own function: `compute(gen, ref, sr) -> value`, run by the
            evaluation on every line with a ground-truth recording. None: produced elsewhere (synthesis, teacher
            forcing, `audio.audio_metrics`, the speaker and MOS backends).
        version: bump when the definition changes, so cached evaluations that hold the old value are recomputed.
        quality: a quality term (spectral, MOS, similarity, intonation, voicing): one the codec's own round trip
            loses too, so with `eval.objective.reference: ceiling` it is scored relative to the codec ceiling
            (`objective.composite_score`). Timing, length, EOS and code-level terms are the model's alone.
        min_speech_s: the metric counts on a line only when the line's ground truth holds at least this much
            speech (seconds of VAD speech span); on shorter lines its clean spread exceeds what failures do to it
            (scripts/calibrate_metrics.py measures both). 0 = every line.
    """

    key: str
    better: Better
    worst: float
    unit: str
    description: str
    goodness: Goodness | None = None
    weight: float = 0.0
    limit: float | None = None
    table: bool = False
    compute: ComputeHook | None = None
    version: int = 1
    quality: bool = False
    min_speech_s: float = 0.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid metric `{self.key}`:\n  - " + "\n  - ".join(map(str, problems)))

    def problems(self) -> list[Problem]:
        out = []
        if not self.key.isidentifier():
            out.append(Problem("key", self.key, "must be an identifier", "e.g. key='toy_level'"))
        if self.better not in ("lower", "higher", "one", "zero"):
            out.append(Problem("better", self.better, "must be lower, higher, one or zero", "e.g. 'lower'"))
        if isinstance(self.worst, bool) or not isinstance(self.worst, int | float) or not math.isfinite(self.worst):
            out.append(Problem("worst", self.worst, "must be a finite number", "the value of a clear failure"))
        if _bad_number(self.weight):
            out.append(Problem("weight", self.weight, "must be a finite number >= 0", "0 keeps it out"))
        if self.weight > 0 and self.goodness is None:
            out.append(Problem("weight", self.weight, "needs a goodness mapping", "give goodness=..."))
        if self.goodness is not None and self.better not in ("lower", "higher"):
            out.append(Problem("goodness", self.goodness, "needs better='lower' or 'higher'", "score its *_error"))
        if self.limit is not None and (self.better != "lower" or _bad_number(self.limit)):
            out.append(Problem("limit", self.limit, "needs better='lower' and a finite limit >= 0", "limit=None"))
        if self.compute is not None and not callable(self.compute):
            out.append(Problem("compute", self.compute, "must be callable", "compute(gen, ref, sr) -> float"))
        return out

    @property
    def direction(self) -> str | None:
        """Optuna study direction, None for diagnostics."""
        return {"higher": "maximize", "lower": "minimize"}.get(self.better)

    def finite(self, value: Any) -> float:
        """`value` as a float, or the worst value when it is missing, NaN or Inf."""
        if value is None:
            return float(self.worst)
        v = float(value)
        return v if math.isfinite(v) else float(self.worst)

    def identity(self) -> str:
        """What cached results depend on: definition version, worst value, goodness, default weight, hook."""
        hook = "" if self.compute is None else f"{self.compute.__module__}.{self.compute.__qualname__}"
        extra = ("|quality" if self.quality else "") + (f"|min{self.min_speech_s!r}" if self.min_speech_s else "")
        return f"{self.key}|v{self.version}|{self.worst!r}|{self.goodness!r}|{self.weight!r}|{hook}{extra}"


class Registry:
    """Metrics by key, in registration order (which is the order of the objective's terms and table columns)."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._metrics: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)

    def register(self, metric: Metric) -> Metric:
        """Add a metric; a key registered twice is a programming error (two definitions of one name)."""
        if metric.key in self._metrics:
            raise ValueError(f"metric `{metric.key}` is already registered. Fix: choose another key")
        self._metrics[metric.key] = metric
        return metric

    def unregister(self, key: str) -> Metric:
        return self._metrics.pop(key)

    def __getitem__(self, key: str) -> Metric:
        return self._metrics[key]

    def __contains__(self, key: object) -> bool:
        return key in self._metrics

    def __iter__(self) -> Iterator[Metric]:
        return iter(list(self._metrics.values()))

    def __len__(self) -> int:
        return len(self._metrics)

    def keys(self) -> list[str]:
        return list(self._metrics)

    def get(self, key: str) -> Metric | None:
        return self._metrics.get(key)

    def directions(self) -> dict[str, str]:
        """{key: "maximize" | "minimize"} for every metric with a direction."""
        return {m.key: m.direction for m in self if m.direction is not None}

    def weighable(self) -> list[str]:
        """Keys that may carry a composite weight: those with a goodness mapping."""
        return [m.key for m in self if m.goodness is not None]

    def default_weights(self) -> dict[str, float]:
        """{key: default weight} for every weighable metric, in registration order."""
        return {m.key: float(m.weight) for m in self if m.goodness is not None}

    def constrainable(self) -> list[str]:
        """Constraint names (`max_<key>`) for every lower-is-better metric."""
        return [f"max_{m.key}" for m in self if m.better == "lower"]

    def default_limits(self) -> dict[str, float]:
        """{`max_<key>`: limit} for every metric declaring a default limit."""
        return {f"max_{m.key}": float(m.limit) for m in self if m.limit is not None}

    def capped_keys(self) -> list[str]:
        return [m.key for m in self if m.goodness is not None and m.goodness.capped]

    def quality_keys(self) -> list[str]:
        """Weighable metrics scored relative to the codec ceiling under `reference: ceiling`."""
        return [m.key for m in self if m.goodness is not None and m.quality]

    def unreliable_keys(self, speech_s: float) -> list[str]:
        """Metrics that do not count on a line with `speech_s` seconds of ground-truth speech."""
        return [m.key for m in self if m.min_speech_s > speech_s]

    def table_keys(self) -> list[str]:
        """Report-table columns, in registration order."""
        return [m.key for m in self if m.table]

    def hooks(self) -> list[Metric]:
        """Metrics computed per line by their own `compute` function."""
        return [m for m in self if m.compute is not None]

    def compute(self, gen: Any, ref: Any, sr: int) -> dict[str, float]:
        """Every registered compute hook on one line; a non-finite result is the metric's worst value."""
        return {m.key: m.finite(m.compute(gen, ref, sr)) for m in self.hooks()}  # type: ignore[misc]

    def digest(self) -> str:
        """Hash of every metric's `identity`: part of the evaluation cache key, so cached results follow the
        registry (a metric added, removed, redefined or reweighted) without a hand-kept schema version."""
        blob = "\n".join(sorted(m.identity() for m in self))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def weight_problems(self, weights: Mapping[str, Any]) -> list[Problem]:
        """Every unknown key (with a did-you-mean) and invalid value in a {metric key: weight} mapping."""
        return _mapping_problems(
            weights,
            self.weighable(),
            "is not a registered metric with a goodness mapping",
            "a weight must be a finite number >= 0",
            "0 drops the term",
        )

    def limit_problems(self, limits: Mapping[str, Any]) -> list[Problem]:
        """Every unknown name and invalid value in a {`max_<key>`: limit or None} mapping."""
        return _mapping_problems(
            limits,
            self.constrainable(),
            "is not `max_` + a registered lower-is-better metric",
            "a limit must be a finite number >= 0 or null",
            "null disables the constraint",
            none_ok=True,
        )


def _mapping_problems(
    mapping: Mapping[str, Any], known: list[str], unknown_rule: str, rule: str, fix: str, none_ok: bool = False
) -> list[Problem]:
    out = []
    for name, value in mapping.items():
        if name not in known:
            near = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean `{near[0]}`?" if near else f"use one of {sorted(known)}"
            out.append(Problem(str(name), value, unknown_rule, hint))
        elif not (none_ok and value is None) and _bad_number(value):
            out.append(Problem(str(name), value, rule, f"e.g. {name}=0.5 ({fix})"))
    return out
