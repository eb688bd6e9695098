"""Warm start across voices: enqueue the best points of earlier studies once, after the published defaults.

A sweep file's `warm_start: [...]` names earlier studies: a study name (looked up in the sweep's own storage, then
the default storages under runs/), `<storage URL>#<study name>`, or a storage URL holding exactly one study. Their
top `warm_start_top_k` COMPLETE trials (the report's order: `selection.top_trials`; for a multi-objective study,
its Pareto front in trial order) are enqueued as fixed trials of this study, each tagged with the user attribute
`warm_start` = "<source> trial <n>" (the report marks them). Only the parameters this sweep searches are taken; a
point that lacks one of them, or has a value outside this sweep's space, is left out (and said so).

Once: the study records each source it has enqueued in its user attribute `warm_start_enqueued`, so re-running
the command (resuming) or a second driver's prepare enqueues nothing again; `skip_if_exists` also keeps a point
that is already in the study (e.g. equal to a published default) from running twice.

When it helps: the same base model and a similar data size (another voice fine-tuned with the same recipe lands
on a similar learning rate, epoch and scale); little when the model, LoRA rank or data size differ a lot.

Owns: resolving the sources, choosing and filtering the points, the once-only marker. Does not own: the study
set-up order (driver.py calls this right after the sweep file's own `enqueue`), storage (storage.py).
"""

from __future__ import annotations

import math
from typing import Any

from qtts_sweep.sweep.recovery import enqueue_point
from qtts_sweep.util.problems import Problem, ValidationError

ATTR = "warm_start"  # trial user attribute: where an enqueued point came from
DONE_ATTR = "warm_start_enqueued"  # study user attribute: sources already enqueued


def _is_url(source: str) -> bool:
    return "://" in source or source.startswith("journal:")


def resolve(source: str, own_storage: str, runs_dir: str):
    """The earlier study a `warm_start` entry names (a clear error listing what exists when there is none)."""
    import optuna

    from qtts_sweep.sweep.storage import default_storages, load_existing_study, open_existing_storage
    from qtts_sweep.util.urls import redact

    if "#" in source:
        url, name = source.rsplit("#", 1)
        return load_existing_study(name, url)
    if _is_url(source):
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(open_existing_storage(source)))
        if len(names) != 1:
            rule = f"holds {len(names)} studies ({names}); which one is meant is ambiguous"
            fix = f"write `{redact(source)}#<study name>`"
            raise ValidationError([Problem("warm_start", redact(source), rule, fix)], "sweep")
        return load_existing_study(names[0], source)
    tried = []
    for url in dict.fromkeys([own_storage, *default_storages(runs_dir)]):
        try:
            return load_existing_study(source, url)
        except ValidationError:
            tried.append(redact(url))
    fix = "run that sweep first, or write `<storage URL>#<study name>`"
    raise ValidationError([Problem("warm_start", source, f"no such study in {tried}", fix)], "sweep")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fits(value: Any, p: Any) -> bool:
    if p.type == "categorical":
        return any(value == c or (_number(value) and _number(c) and math.isclose(value, c)) for c in p.choices)
    if not isinstance(value, int | float) or not p.low <= value <= p.high:
        return False
    return p.type != "int" or float(value).is_integer()


def top_points(study, space: dict[str, Any], k: int) -> tuple[list[tuple[int, dict]], list[str]]:
    """(trial number, point) of the study's top k completed trials restricted to `space`, and why any was left out."""
    from qtts_sweep.sweep import selection

    trials = selection.pareto_front(study) if selection.is_multi(study) else selection.top_trials(study, k)
    points, skipped = [], []
    for t in trials[:k]:
        missing = sorted(set(space) - set(t.params))
        outside = sorted(n for n in space if n in t.params and not _fits(t.params[n], space[n]))
        if missing or outside:
            why = f"lacks {missing}" if missing else f"outside this space: {outside}"
            skipped.append(f"trial {t.number}: {why}")
            continue
        points.append((t.number, {n: t.params[n] for n in space}))
    return points, skipped


def enqueue_warm_start(study, spec: Any, runs_dir: str, own_storage: str | None = None) -> list[str]:
    """Enqueue each not yet enqueued source's top points into `study`; return what was done, one line each."""
    from qtts_sweep.sweep.storage import default_storage

    done = list(study.user_attrs.get(DONE_ATTR, []))
    todo = [s for s in spec.warm_start if s not in done]
    lines = []
    for source in todo:
        earlier = resolve(source, own_storage or spec.storage or default_storage(runs_dir), runs_dir)
        points, skipped = top_points(earlier, spec.space, spec.warm_start_top_k)
        for number, point in points:
            enqueue_point(study, point, **{ATTR: f"{source} trial {number}"})
        lines.append(f"warm start: enqueued {len(points)} point(s) of `{earlier.study_name}` ({source})")
        lines += [f"  left out {why}" for why in skipped]
        done.append(source)
        study.set_user_attr(DONE_ATTR, done)
    return lines
