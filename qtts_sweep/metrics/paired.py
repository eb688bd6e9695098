"""Is a lead real? Paired differences of per-line scores with a bootstrap interval, and the tie-break rule.

Two trials of one study score the same held-out lines with the same decoding seeds, so they pair up line by line.
The lead of trial A over trial B is measured on the quantity the winner was chosen by: each trial's objective
(its composite score of the aggregated metrics, `objective.LineObjective`) recomputed on the same lines, A minus
B; its uncertainty is what resampling whole lines says (a percentile bootstrap: numpy, fixed seed, so the same
study always gives the same interval; a line's seeds are drawn together because they are correlated). When the
interval contains 0 the two are a tie within noise, and the choice among the trials tied with the best is made by
a written rule (`eval.objective.tie_break`) instead of by noise; an interval wholly below 0 says the other trial
is better (possible for a feasible winner against an infeasible trial). Fewer than `MIN_LINES` lines are too few
to separate anything, and every description says so.

Owns: the statistics and the tie-break order, on plain numbers and plain dicts. Does not own: reading trials
(qtts_sweep.sweep), computing scores (objective.py), reporting or logging them. No Optuna, no model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
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
# Below this many held-out lines a bootstrap over lines has too few distinct resamples to separate anything: the
# report says so beside every interval (score more lines: eval.max_lines).
MIN_LINES = 6
# A statistic of one trial on a resample of its lines: (line ids, counts shaped (resamples, len(line ids)) with
# how often each line is drawn) -> the trial's value on each resample.
Statistic = Callable[[Sequence[str], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairedDiff:
    """Trial a's value minus trial b's, on the same quantity the winner was chosen by, over the `n` held-out lines
    both scored (`pairs` (line, seed) pairs), with a bootstrap interval [lo, hi] at `level` that resamples whole
    lines (the seeds of one line are correlated: they share its text, recording and reference)."""

    n: int
    mean: float
    lo: float
    hi: float
    level: float = LEVEL
    pairs: int = 0

    @property
    def has_interval(self) -> bool:
        """One line has no spread to resample: nothing can be said about noise."""
        return self.n >= 2

    @property
    def thin(self) -> bool:
        """Too few lines (< MIN_LINES) for the interval to separate anything."""
        return self.n < MIN_LINES

    @property
    def tie(self) -> bool:
        """The interval contains 0 (a single line is never called a tie: there is no interval)."""
        return self.has_interval and self.lo <= 0.0 <= self.hi

    @property
    def behind(self) -> bool:
        """The whole interval is below 0: the first trial is significantly worse than the second."""
        return self.has_interval and self.hi < 0.0

    def verdict(self) -> str:
        if self.tie:
            return "tie within noise"
        return "behind, outside noise (the other trial is better)" if self.behind else "lead outside noise"

    def describe(self) -> str:
        lines = f"{self.n} line(s)" + (f", {self.pairs} (line, seed) pairs" if self.pairs else "")
        if not self.has_interval:
            return f"{self.mean:+.4f} over {lines}: no interval (score more lines: eval.max_lines)"
        thin = f"; too few lines (< {MIN_LINES}) to separate trials: read as a tie" if self.thin else ""
        return (
            f"{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}] ({self.level:.0%} bootstrap CI over {lines}, "
            f"whole lines resampled): {self.verdict()}{thin}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "pairs": self.pairs,
            "mean": self.mean,
            "lo": self.lo,
            "hi": self.hi,
            "level": self.level,
            "tie": self.tie,
            "behind": self.behind,
            "thin": self.thin,
        }


def _seed_means(scores: Mapping[Key, float]) -> tuple[list[str], Statistic]:
    """The mean of per-(line, seed) scores over a resample of lines (each drawn line brings all its seeds)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for (line, _seed), v in scores.items():
        sums[line] = sums.get(line, 0.0) + float(v)
        counts[line] = counts.get(line, 0) + 1

    def statistic(lines: Sequence[str], c: np.ndarray) -> np.ndarray:
        s = np.array([sums[ln] for ln in lines])
        n = np.array([counts[ln] for ln in lines], dtype=float)
        return (c @ s) / (c @ n)

    return sorted(sums), statistic


def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each of n lines is drawn in each bootstrap resample."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.repeat(np.arange(resamples), n), idx.ravel()), 1.0)
    return counts


def paired_difference(
    a: Candidate | Mapping[Key, float],
    b: Candidate | Mapping[Key, float],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> PairedDiff:
    """a − b over the lines both have, with a percentile-bootstrap interval over whole lines.

    A `Candidate` with a `statistic` is measured by it (its objective recomputed on each resample: the quantity
    the winner was chosen by); otherwise, and for a plain {(line, seed): score} map, by the mean of its scores.

    Raises:
        ValueError: when the two share no line (scored on different lines: not comparable).
    """
    shared = set(_keys(a)) & set(_keys(b))
    if not shared:
        raise ValueError("the two trials share no (line, seed) pair: they were scored on different lines")
    lines = sorted({line for line, _ in shared})
    fa, fb = _as_statistic(a, shared), _as_statistic(b, shared)
    pairs = len(shared)
    ones = np.ones((1, len(lines)))
    mean = float(fa(lines, ones)[0] - fb(lines, ones)[0])
    if len(lines) < 2:
        return PairedDiff(1, mean, mean, mean, level, pairs)
    counts = _resample_counts(len(lines), resamples, seed)
    diffs = fa(lines, counts) - fb(lines, counts)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return PairedDiff(len(lines), mean, float(lo), float(hi), level, pairs)


def _keys(x: Candidate | Mapping[Key, float]) -> Iterable[Key]:
    return x.scores.keys() if isinstance(x, Candidate) else x.keys()


def _as_statistic(x: Candidate | Mapping[Key, float], shared: set[Key]) -> Statistic:
    if isinstance(x, Candidate) and x.statistic is not None:
        return x.statistic
    scores = x.scores if isinstance(x, Candidate) else x
    return _seed_means({k: scores[k] for k in sorted(shared)})[1]


@dataclass(frozen=True)
class Candidate:
    """A completed trial as the statistics see it: number, objective, parameters, per-(line, seed) scores, and
    optionally its objective on any resample of its lines (`statistic`), the (checkpoint, scale) `pair` it scored
    (two candidates with one pair are repeats of one point, e.g. a retry) and whether it met the constraints."""

    number: int
    objective: float
    params: Mapping[str, Any]
    scores: Mapping[Key, float]
    statistic: Statistic | None = field(default=None, compare=False)
    pair: Any = None
    feasible: bool = True
    # what `scores` and `statistic` were computed from (e.g. a digest of the result file and the weights): two
    # candidates with one `ident` measure the same, so `choose(leads_cache=...)` may reuse a lead
    ident: Any = field(default=None, compare=False)


def _lead(best: Candidate, other: Candidate, cache: MutableMapping[tuple, PairedDiff] | None) -> PairedDiff:
    if cache is None or best.ident is None or other.ident is None:
        return paired_difference(best, other)
    key = (best.ident, other.ident)
    if key not in cache:
        cache[key] = paired_difference(best, other)
    return cache[key]


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
    """Which trial to pick and why: `best` has the top objective (among the feasible trials when any is);
    `chosen` is best unless a tie was broken; `runner_up` is the best trial that scored another (checkpoint,
    scale) pair (None when every other trial repeats the winner's)."""

    best: Candidate
    chosen: Candidate
    tied: list[int]  # trial numbers whose lead interval against `best` contains 0, best included
    leads: dict[int, PairedDiff] = field(default_factory=dict)  # best − other, per other trial number
    rules: tuple[str, ...] = ()
    runner_up: int | None = None
    repeats: list[int] = field(default_factory=list)  # trials that scored the winner's own pair
    infeasible: list[int] = field(default_factory=list)  # trials that broke a constraint (never chosen over one)

    @property
    def broke_tie(self) -> bool:
        return len(self.tied) > 1

    @property
    def thin(self) -> bool:
        """The evidence is too thin (fewer than MIN_LINES lines) to separate any two trials."""
        return any(d.thin for d in self.leads.values())

    def explain(self) -> str:
        thin = next((d for d in self.leads.values() if d.thin), None)
        caveat = (
            f" (only {thin.n} held-out line(s): too few to separate trials; score more lines with eval.max_lines)"
            if thin
            else ""
        )
        if not self.broke_tie:
            return f"trial {self.best.number} has the best objective and no other trial is tied with it{caveat}"
        prefs = ", then ".join(TIE_BREAK_RULES[r][1] for r in self.rules) or "the lower trial number"
        return (
            f"trials {', '.join(map(str, self.tied))} are tied within noise with the best (trial "
            f"{self.best.number}); eval.objective.tie_break prefers {prefs}: trial {self.chosen.number}{caveat}"
        )


def choose(
    candidates: Sequence[Candidate],
    rules: Sequence[str] = TIE_BREAK_DEFAULT,
    leads_cache: MutableMapping[tuple, PairedDiff] | None = None,
) -> Verdict:
    """The best candidate by objective (feasible ones first; ties: lower number), then the trial `rules` prefer
    among the feasible, distinct (checkpoint, scale) pairs tied with it.

    `leads_cache` keeps each lead by the two candidates' `ident`s: a sweep's progress line asks after every trial,
    and while the best stays the best only the new trial's lead is computed (a bootstrap per other trial each
    time made every progress line of a 200-trial study cost seconds).

    Raises:
        ValueError: for no candidates or an unknown rule.
    """
    if not candidates:
        raise ValueError("no candidate trials to choose from")
    unknown = [r for r in rules if r not in TIE_BREAK_RULES]
    if unknown:
        raise ValueError(f"unknown tie-break rule(s) {unknown}. Fix: use some of {list(TIE_BREAK_RULES)}")

    def rank(c: Candidate) -> tuple:
        return (c.feasible, c.objective, -c.number)

    best = max(candidates, key=rank)
    repeats = [c for c in candidates if c is not best and c.pair is not None and c.pair == best.pair]
    others = [c for c in candidates if c is not best and c not in repeats]
    leads = {c.number: _lead(best, c, leads_cache) for c in others}
    # an infeasible trial is never chosen over a feasible one, however close its score
    tied = [best] + [c for c in others if leads[c.number].tie and c.feasible >= best.feasible]
    chosen = min(tied, key=lambda c: tie_break_key(c, rules))
    runner_up = max(others, key=rank).number if others else None
    return Verdict(
        best,
        chosen,
        sorted(c.number for c in tied),
        leads,
        tuple(rules),
        runner_up,
        sorted(c.number for c in repeats),
        sorted(c.number for c in candidates if not c.feasible),
    )
