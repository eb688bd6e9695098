"""LoRA training and the content-addressed checkpoint store.

Owns: `loop` (reuse / resume / train up to an epoch, validation loss), `store` (the training key and every read
and write of a checkpoint folder). Does not own: the loss and model layout (`qtts_sweep.model`), Optuna, MLflow
(training reports through `qtts_sweep.tracking.reporter`'s protocol).
"""
