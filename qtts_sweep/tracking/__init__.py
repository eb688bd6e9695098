"""Experiment tracking: the only package that imports mlflow.

Owns: `tracker` (the `Tracker` protocol every caller sees, and the null tracker), `mlflow_tracker` (training
runs per key, a parent run per study, a child run per trial, the model registry), `server` (a local MLflow server).
Does not own: what is computed or decided; it records what it is given.

Modules: `mlflow_tracker`, `server`, `tracker`.
Imports from the package: config, util.
"""
