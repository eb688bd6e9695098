"""Production: a chosen trial -> a self-contained bundle, its registry version, a merged export, and gc.

Owns: the bundle format (save / load), promotion (selection is `qtts_sweep.sweep`'s), export of a merged
custom-voice model, and `gc` of checkpoints nothing needs. Does not own: scoring (`qtts_sweep.evaluate`), Optuna
study machinery, MLflow calls (through `qtts_sweep.tracking`).

Modules: `bundle`, `export`, `gc`, `lookup`, `promote`, `serve`, `stress`.
Imports from the package: config, data, evaluate, metrics, model, sweep, tracking, train, util.
"""
