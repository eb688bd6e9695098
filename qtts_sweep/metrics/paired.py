"""Is a lead real? Paired differences of per-line scores with a bootstrap interval, and the tie-break rule.

Two trials of one study score the same held-out lines with the same decoding seeds, so their per-(line, seed)
composite scores (`objective.line_scores`) pair up: the lead of trial A over trial B is the mean over pairs of
score_A − score_B, and its uncertainty is what resampling the pairs says (a percentile bootstrap: numpy, fixed
seed, so the same study always gives the same interval). When the interval contains 0 the two are a tie within
noise, and the choice among the trials tied with the best is made by a written rule (`eval.objective.tie_break`)
instead of by noise.

Owns: the statistics and the tie-break order, on plain numbers and plain dicts. Does not own: reading trials
(qtts_sweep.sweep), computing scores (objective.py), reporting or logging them. No Optuna, no model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 2000  # percentile-bootstrap endpoints at 95% are stable to ~0.01 of the interval width by 2000
LEVEL = 0.95
SEED = 0  # fixed: the same study gives the same interval every time it is reported

# rule name -> (trial parameter it reads, what it prefers). Each prefers the cheaper or more conservative choice:
# a smaller adapter scale changes the base voice less, an earlier epoch trained less, a lower learning rate is
# the published recipe's side of the range; `earlier_trial` (the lower trial number) always decides last.
TIE_BREAK_RULES: dict[str, tuple[str | None, str]] = {
    "lower_scale": ("eval.lora_scale", "the lower LoRA scale"),
    "earlier_epoch": ("eval.epoch", "the earlier epoch"),
    "lower_lr": ("train.lr", "the lower learning rate"),
    "earlier_trial": (None, "the lower trial number"),
}
TIE_BREAK_DEFAULT = ("lower_scale", "earlier_epoch", "lower_lr")

Key = tuple[str, int]  # (line id, seed index)


@dataclass(frozen=True)
class PairedDiff:
    """Mean over n (line, seed) pairs of score_a − score_b, with a bootstrap interval [lo, hi] at `level`."""

    n: int
    mean: float
    lo: float
    hi: float
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        """One pair has no spread to resample: nothing can be said about noise."""
        return self.n >= 2

    @property
    def tie(self) -> bool:
        """The interval contains 0 (a single pair is never called a tie: there is no interval)."""
        return self.has_interval and self.lo <= 0.0 <= self.hi

    def describe(self) -> str:
        if not self.has_interval:
            return f"{self.mean:+.4f} over 1 (line, seed) pair: no interval (score more lines or eval.num_seeds > 1)"
        verdict = "tie within noise" if self.tie else "lead outside noise"
        return (
            f"{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}] ({self.level:.0%} bootstrap CI over "
            f"{self.n} (line, seed) pairs): {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "lo": self.lo, "hi": self.hi, "level": self.level, "tie": self.tie}


def paired_difference(
    a: Mapping[Key, float], b: Mapping[Key, float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> PairedDiff:
    """score_a − score_b over the (line, seed) keys both have, with a percentile-bootstrap interval.

    Raises:
        ValueError: when the two share no (line, seed) pair (scored on different lines: not comparable).
    """
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("the two trials share no (line, seed) pair: they were scored on different lines")
    d = np.array([float(a[k]) - float(b[k]) for k in keys])
    mean = float(d.mean())
    if len(d) < 2:
        return PairedDiff(1, mean, mean, mean, level)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return PairedDiff(len(d), mean, float(lo), float(hi), level)


@dataclass(frozen=True)
class Candidate:
    """A completed trial as the statistics see it: number, objective, parameters and per-(line, seed) scores."""

    number: int
    objective: float
    params: Mapping[str, Any]
    scores: Mapping[Key, float]


def tie_break_key(c: Candidate, rules: Sequence[str]) -> tuple:
    """Sort key that puts the trial `rules` prefer first; the lower trial number decides last."""
    out: list[float] = []
    for rule in rules:
        param = TIE_BREAK_RULES[rule][0]
        value = c.number if param is None else c.params.get(param)
        out.append(float(value) if isinstance(value, int | float) and math.isfinite(value) else math.inf)
    return (*out, c.number)


@dataclass
class Verdict:
    """Which trial to pick and why: `best` has the top objective; `chosen` is best unless a tie was broken."""

    best: Candidate
    chosen: Candidate
    tied: list[int]  # trial numbers whose lead interval against `best` contains 0, best included
    leads: dict[int, PairedDiff] = field(default_factory=dict)  # best − other, per other trial number
    rules: tuple[str, ...] = ()

    @property
    def broke_tie(self) -> bool:
        return len(self.tied) > 1

    def explain(self) -> str:
        if not self.broke_tie:
            return f"trial {self.best.number} has the best objective and no other trial is tied with it"
        prefs = ", then ".join(TIE_BREAK_RULES[r][1] for r in self.rules) or "the lower trial number"
        return (
            f"trials {', '.join(map(str, self.tied))} are tied within noise with the best (trial "
            f"{self.best.number}); eval.objective.tie_break prefers {prefs}: trial {self.chosen.number}"
        )


def choose(candidates: Sequence[Candidate], rules: Sequence[str] = TIE_BREAK_DEFAULT) -> Verdict:
    """The best candidate by objective (ties: lower number), then the trial `rules` prefer among those tied with it.

    Raises:
        ValueError: for no candidates or an unknown rule.
    """
    if not candidates:
        raise ValueError("no candidate trials to choose from")
    unknown = [r for r in rules if r not in TIE_BREAK_RULES]
    if unknown:
        raise ValueError(f"unknown tie-break rule(s) {unknown}. Fix: use some of {list(TIE_BREAK_RULES)}")
    best = max(candidates, key=lambda c: (c.objective, -c.number))
    leads = {c.number: paired_difference(best.scores, c.scores) for c in candidates if c is not best}
    tied = [best] + [c for c in candidates if c is not best and leads[c.number].tie]
    chosen = min(tied, key=lambda c: tie_break_key(c, rules))
    return Verdict(best, chosen, sorted(c.number for c in tied), leads, tuple(rules))
