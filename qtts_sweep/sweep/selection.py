"""Which trials are best: the trial to promote, the top trials of a report, the trials gc must keep.

Pure reads of a study through Optuna's public API (`get_trials`, `best_trials`, `directions`) and of each trial's
`result.json` (its per-line rows, for the paired comparison). Owns the rules; does not own reports (report.py),
bundles (qtts_sweep.production) or the statistics (qtts_sweep.metrics.paired).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from qtts_sweep.config.schema import ObjectiveConfig
from qtts_sweep.metrics.objective import LineObjective, line_scores
from qtts_sweep.metrics.paired import Candidate, Verdict, choose
from qtts_sweep.sweep.fidelity import full_lines
from qtts_sweep.sweep.result import StoredTrial
from qtts_sweep.util.problems import Problem, ValidationError

OBJECTIVE_ATTR = "objective"  # study user attribute: the sweep's `eval.objective` as a dict (driver.prepare)


class SelectionError(ValidationError):
    def __init__(self, problems: list[Problem]):
        super().__init__(problems, "trial selection")


def _complete(study) -> list:
    """COMPLETE trials scored on every line: under multi-fidelity (fidelity.py) a trial that the pruner cut short
    is PRUNED, and one whose lines were cut any other way is not eligible either; a pruned pair is never chosen."""
    from optuna.trial import TrialState

    done = (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
    return [t for t in done if full_lines(t)]


def is_multi(study) -> bool:
    return len(study.directions) > 1


def pareto_front(study) -> list:
    """Completed trials on the Pareto front (of the feasible ones when the sweep has constraints; of all completed
    ones when none is feasible), in trial order."""
    done = _complete(study)
    return sorted(study.best_trials or done, key=lambda t: t.number) if done else []


def _by_number(study, number: int):
    from optuna.trial import TrialState

    matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not matches:
        known = [t.number for t in study.get_trials(deepcopy=False)]
        fix = f"trials in this study: {known[0]}..{known[-1]}" if known else "the study has no trials yet"
        raise SelectionError([Problem("trial", number, f"no such trial in study `{study.study_name}`", fix)])
    t = matches[0]
    if t.state != TrialState.COMPLETE:
        why = t.user_attrs.get("fail_reason", "")
        rule = f"is {t.state.name}{': ' + why if why else ''}; only COMPLETE trials can be promoted"
        raise SelectionError([Problem("trial", number, rule, "pick a completed trial (`qtts-sweep report`)")])
    return t


def feasible(trial) -> bool:
    """The trial met every constraint the sweep set (`constraints` user attribute, Optuna's <= 0 convention)."""
    return all(v <= 0.0 for v in StoredTrial.of(trial).constraints)


def select_trial(study, trial_number: int | None = None):
    """The trial to promote: `trial_number` if given (refused unless COMPLETE); else, single objective, the best
    COMPLETE trial among the feasible ones when any is (ties: the lowest number); multi-objective, the
    Pareto-front trial with the best first objective (ties: the lowest number)."""
    if trial_number is not None:
        return _by_number(study, trial_number)
    done = _complete(study)
    if not done:
        raise SelectionError([Problem("study", study.study_name, "has no COMPLETE trial", "run or resume the sweep")])
    if is_multi(study):
        sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
        return sorted(pareto_front(study), key=lambda t: (-sign * t.values[0], t.number))[0]
    return max(done, key=lambda t: (feasible(t), t.value, -t.number))


def top_trials(study, k: int) -> list:
    """The k best completed trials of a single-objective study, best first: feasible ones before infeasible
    ones, then by value (ties: the lower number)."""
    if is_multi(study):
        return []
    return sorted(_complete(study), key=lambda t: (not feasible(t), -t.value, t.number))[:k]


def kept_trials(study, k: int) -> list:
    """Trials whose checkpoints gc keeps: the top k (single objective) or the whole Pareto front (multi)."""
    return pareto_front(study) if is_multi(study) else top_trials(study, k)


def best_summary(study) -> dict[str, Any] | None:
    """The trial `promote` would pick (`select_for_promotion`: the sweep's own objective and tie-break), as plain
    data (None while no trial completed): the progress line, the sweep's outcome, the report and promote name one
    winner."""
    if not _complete(study):
        return None
    if is_multi(study):
        best = select_trial(study)
    else:
        best, _ = select_for_promotion(study, ObjectiveConfig())
    stored = StoredTrial.of(best)
    return {
        "number": best.number,
        "values": best.values,
        "params": best.params,
        "checkpoint": stored.checkpoint_path,
        "mlflow_run_id": stored.mlflow_run_id,
    }


# Per process: what a result file's lines score ({ident: (scores, statistic, scale)}) and the leads between them
# ({(ident, ident): PairedDiff}). An ident is a digest of the file's bytes and the objective, so a result that grew
# (more lines scored) or another objective is measured afresh; reading a small file is cheap, scoring it is not (a
# size and mtime would miss a same-size rewrite within the file system's timestamp granularity). Bounded: cleared
# when it grows past the cap.
_SCORED: dict[tuple, tuple] = {}
_LEADS: dict[tuple, Any] = {}
_CACHE_CAP = 5_000  # entries; a result file's entry holds its scores and its last bootstrap batch (~16 kB)


def candidate(trial, objective: ObjectiveConfig) -> Candidate | None:
    """A completed trial's per-(line, seed) composite scores, with the study's weights and reference; None when
    its result is gone (a cleaned runs/ folder) or it has no single objective value."""
    stored = StoredTrial.of(trial)
    path = stored.result_file
    if path is None or trial.values is None or len(trial.values) != 1:
        return None
    data = path.read_bytes()
    ident = (hashlib.blake2b(data).hexdigest(), json.dumps(dataclasses.asdict(objective), sort_keys=True))
    if ident not in _SCORED:
        if len(_SCORED) > _CACHE_CAP:
            _SCORED.clear()
        result = json.loads(data)
        ceiling = (result.get("ceiling") or {}).get("per_line")
        weights = objective.objective_weights()
        scores = line_scores(result["per_line"], weights, ceiling)
        statistic = LineObjective(result["per_line"], weights, ceiling).on  # the trial's value, per resample
        _SCORED[ident] = (scores, statistic, result.get("scale"))
    scores, statistic, result_scale = _SCORED[ident]
    scale = trial.params.get("eval.lora_scale", result_scale)
    pair = (stored.checkpoint_path, round(float(scale), 6) if scale is not None else None)
    return Candidate(
        trial.number, float(trial.value), dict(trial.params), scores, statistic, pair, feasible(trial), ident
    )


def study_objective(study, fallback: ObjectiveConfig) -> tuple[ObjectiveConfig, bool]:
    """The objective the sweep itself ran with (recorded on the study when it was prepared: weights, reference,
    tie-break), and whether it was found; `fallback` (e.g. the command line's config) for older studies."""
    import dataclasses

    saved = study.user_attrs.get(OBJECTIVE_ATTR)
    if not isinstance(saved, dict):
        return fallback, False
    known = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    return dataclasses.replace(fallback, **{k: v for k, v in saved.items() if k in known}), True


def paired_verdict(study, objective: ObjectiveConfig) -> Verdict | None:
    """The best completed trial, its lead over every other on the objective itself (paired bootstrap over whole
    lines), the best distinct (checkpoint, scale) runner-up, and the trial `objective.tie_break` picks among those
    tied within noise. None for multi-objective studies or no results."""
    if is_multi(study):
        return None
    found = [c for c in (candidate(t, objective) for t in _complete(study)) if c is not None]
    if len(_LEADS) > _CACHE_CAP:
        _LEADS.clear()
    return choose(found, objective.tie_break, _LEADS) if found else None


def enqueued_trial(study, point: dict[str, Any]):
    """The completed trial that ran an enqueued point (e.g. the published defaults), None when it did not run."""
    for t in _complete(study):
        if all(_same(t.params.get(k), v) for k, v in point.items()):
            return t
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def select_for_promotion(study, objective: ObjectiveConfig, trial_number: int | None = None) -> tuple[Any, str]:
    """The trial to promote and why. An explicit `trial_number` is taken as asked; otherwise the best trial,
    unless other trials are tied with it within noise, when the tie-break chooses among them. The weights and
    tie-break are the sweep's own (`study_objective`); `objective` only stands in for a study that did not
    record them."""
    if trial_number is not None:
        return _by_number(study, trial_number), f"trial {trial_number} was asked for"
    objective, _ = study_objective(study, objective)
    best = select_trial(study)
    verdict = paired_verdict(study, objective)
    if verdict is None or verdict.best.number != best.number:
        return best, f"trial {best.number} has the best objective (no per-line results to compare)"
    return _by_number(study, verdict.chosen.number), verdict.explain()
