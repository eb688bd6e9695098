"""How a study searches: its sampler, its pruner, its constraints and metric names, and opening it with them.

Owns: the factories from a sweep file's `sampler` / `pruner` settings to Optuna's objects, and `open_study`.
Does not own: where the study is stored (storage.py), what a trial computes (worker.py).
"""

from __future__ import annotations

from typing import Any

from qtts_sweep.sweep.result import StoredTrial
from qtts_sweep.sweep.spec import SweepSpec


def trial_constraints(trial) -> list[float]:
    """Optuna constraints_func: the violations the driver stored (<= 0 feasible); none yet counts as feasible."""
    return StoredTrial.of(trial).constraints or [0.0]


def make_sampler(spec: SweepSpec):
    import optuna

    kw = dict(spec.sampler_kwargs)
    if spec.constrained:
        kw["constraints_func"] = trial_constraints
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.sampler_seed, **kw)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler_seed)
    if spec.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=spec.sampler_seed, **kw)
    grid = {name: p.values() for name, p in spec.space.items()}
    return optuna.samplers.GridSampler(grid, seed=spec.sampler_seed)


def make_pruner(spec: SweepSpec):
    import optuna

    from qtts_sweep.sweep import fidelity

    kw = dict(spec.pruner_kwargs)
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**kw),
        "percentile": lambda: optuna.pruners.PercentilePruner(**kw),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**kw),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**kw),
        "wilcoxon": lambda: fidelity.make_pruner(kw, spec.fidelity),  # per-line chunks (sweep/fidelity.py)
    }[spec.pruner]()


def open_study(spec: SweepSpec, storage: Any):
    """The sweep's study with its sampler, pruner and metric names, created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        directions=spec.directions if spec.multi else ["maximize"],
        load_if_exists=True,
    )
    names = metric_names(spec)
    if study.metric_names != names:  # dashboards label their axes with these, not "Objective 0"
        study.set_metric_names(names)
    return study


def metric_names(spec: SweepSpec) -> list[str]:
    """What each objective value is called in Optuna (and so in optuna-dashboard's plots)."""
    return list(spec.objectives) if spec.multi else [f"{spec.objective} objective"]
