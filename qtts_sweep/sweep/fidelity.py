"""Multi-fidelity over held-out lines: score a (checkpoint, scale) pair on a few lines, add lines only while it
can still win.

A sweep file opts in with `pruner: wilcoxon` and `fidelity: {min_lines: 10, step: 10}`. The worker then scores the
first `min_lines` lines, then `step` more at a time (chunk ends rounded up to whole generation batches, so every
line's row is the one a full evaluation gives and the per-line cache extends it: qtts_sweep.evaluate.line_cache).
After each chunk it sends the new lines' per-line composite scores (`objective.line_scores`); the driver reports
each as an intermediate value at step = (line index x eval.num_seeds + seed index) and asks Optuna's
`WilcoxonPruner`: a paired signed-rank test of this trial's lines against the same lines of the best trial so far.
A pruned trial stops synthesizing there (state PRUNED: never promoted, never a report's top trial). A trial that
is not pruned scores every line, so every COMPLETE trial, and hence the promoted one, was scored on all of them.

In this mode the trial's objective is the mean of its per-line composite scores: the very quantity the test
compares and the one the report's paired bootstrap compares (the composite of mean metrics would disagree with
WilcoxonPruner's `average_is_best` safety check, which compares the best trial's value with this mean).
Per-epoch validation losses are then not reported to the trial: Wilcoxon reads every intermediate value as one
instance, and an epoch step would be compared with a line step of the same number.

Owns: the sweep-file setting, the chunk schedule, the pruner, the per-line values and the driver-side relay.
Does not own: scoring or caching (qtts_sweep.evaluate), the trial loop (driver.py), the worker (worker.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from qtts_sweep.util.problems import Problem

PRUNER = "wilcoxon"


@dataclass(frozen=True)
class Fidelity:
    """First chunk of lines, then `step` more per chunk, until every line of the split is scored."""

    min_lines: int = 10
    step: int = 10


def read_fidelity(raw: Any, where: str) -> tuple[Fidelity | None, list[Problem]]:
    """The sweep file's `fidelity:` block (None when absent), with what is wrong about it."""
    if raw is None:
        return None, []
    try:
        fid = Fidelity(**raw)
    except TypeError as exc:
        return None, [Problem(f"{where}: fidelity", raw, str(exc), "e.g. fidelity: {min_lines: 10, step: 10}")]
    out = []
    for name in ("min_lines", "step"):
        value = getattr(fid, name)
        if not isinstance(value, int) or value < 1:
            out.append(Problem(f"{where}: fidelity.{name}", value, "must be an integer >= 1", f"e.g. {name}: 10"))
    return fid, out


def spec_problems(pruner: str, fid: Fidelity | None, where: str) -> list[Problem]:
    """The pruner and the fidelity setting go together."""
    if pruner == PRUNER and fid is None:
        fix = "add fidelity: {min_lines: 10, step: 10}"
        return [Problem(f"{where}: fidelity", None, "pruner: wilcoxon needs per-line chunks", fix)]
    if fid is not None and pruner != PRUNER:
        rule = "fidelity (per-line chunks) is pruned by the wilcoxon pruner"
        return [Problem(f"{where}: pruner", pruner, rule, "set pruner: wilcoxon")]
    return []


def chunk_ends(n_total: int, fid: Fidelity, batch_size: int) -> list[int]:
    """Increasing line counts to score, the last = n_total; each rounded up to whole batches of `batch_size`."""

    def whole(n: int) -> int:
        return min(n_total, math.ceil(n / batch_size) * batch_size)

    ends, n = [], fid.min_lines
    while True:
        end = whole(n)
        if not ends or end > ends[-1]:
            ends.append(end)
        if end >= n_total:
            return ends
        n += fid.step


def make_pruner(kwargs: dict[str, Any], fid: Fidelity):
    """Optuna's WilcoxonPruner; `n_startup_steps` defaults to `min_lines` (no test on fewer lines than that)."""
    import warnings

    import optuna

    kw = {"p_threshold": 0.1, "n_startup_steps": fid.min_lines, **kwargs}
    with warnings.catch_warnings():  # "experimental since 3.6": still so marked in Optuna 5, API unchanged
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(**kw)


def line_values(per_line: list[dict], line_ids: list[str], weights: Any, ceiling_rows: list[dict] | None):
    """[(step, per-line composite score)] of result rows; step = line index (in `line_ids`) x seeds + seed."""
    from qtts_sweep.metrics.objective import line_scores

    seeds = 1 + max((int(r.get("seed", 0)) for r in per_line), default=0)
    index = {lid: i for i, lid in enumerate(line_ids)}
    scores = line_scores(per_line, weights, ceiling_rows)
    return sorted((index[lid] * seeds + seed, value) for (lid, seed), value in scores.items())


def line_mean(values: list[tuple[int, float]]) -> float:
    """The trial objective in this mode: the mean per-line composite score."""
    return statistics.fmean(v for _, v in values) if values else 0.0


class LineRelay:
    """Driver side, per trial: report each new line's score as an intermediate value and ask the pruner."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.lines_used = 0

    def lines(self, n_done: int, n_total: int, values: list[list]) -> bool:
        """Record a chunk (`values`: [step, score] of its new lines); return whether the pruner says stop (also
        when another driver failed the trial meanwhile: nothing more can be recorded, stop scoring)."""
        from optuna.exceptions import UpdateFinishedTrialError

        self.lines_used = n_done
        try:
            for step, value in values:
                self.trial.report(float(value), int(step))
            self.trial.set_user_attr("lines_used", n_done)
            self.trial.set_user_attr("lines_total", n_total)
            return n_done < n_total and self.trial.should_prune()
        except UpdateFinishedTrialError:
            return True


def full_lines(trial) -> bool:
    """Whether a trial was scored on every line (always true for trials run without fidelity)."""
    used, total = trial.user_attrs.get("lines_used"), trial.user_attrs.get("lines_total")
    return used is None or total is None or used >= total
