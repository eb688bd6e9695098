"""LoRA training and the content-addressed checkpoint store.

Owns: `loop` (reuse / resume / train up to an epoch, validation loss), `store` (the training key and every read
and write of a checkpoint folder), `lease` (one trainer per training key across workers). Does not own: the loss
and model layout (`qtts_sweep.model`), Optuna, MLflow (each epoch's metrics go to the caller's `on_epoch`).

Modules: `lease`, `loop`, `store`.
Imports from the package: config, data, model, util.
"""
