"""Experiment tracking: the only package that imports mlflow.

Owns: `tracker` (the `Tracker` and `Registry` protocols every caller sees, and their null versions),
`mlflow_tracker` (training runs per key, a parent run per study, a child run per trial), `registry` (the model
registry: promoted bundles and their aliases), `server` (a local MLflow server).
Does not own: what is computed or decided; it records what it is given.

Modules: `mlflow_tracker`, `registry`, `server`, `tracker`.
Imports from the package: config, util.
"""
