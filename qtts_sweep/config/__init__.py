"""Configuration: the typed schema of every Hydra config group and the loader that composes and validates it.

Owns: `schema` (dataclasses, every value rule; problems are reported as `util.problems.Problem`), `loader`
(Hydra composition, the all-problems-at-once validation pass, path resolution). Does not own: what any value
does at run time, sweep files (`qtts_sweep.sweep.spec`).

Modules: `loader`, `model_source`, `schema`.
Imports from the package: metrics, util.
"""
