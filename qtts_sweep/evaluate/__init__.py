"""Scoring one (checkpoint, LoRA scale): synthesis of held-out lines, metrics, objective, cache.

Owns: `synth` (one loaded base model serving any checkpoint and scale, fixed-batch seeded decoding), `scoring`
(the one scoring function every caller uses: sweep worker, promotion, `synth`, benchmarks), `line_cache` (per-line
results, so scoring more lines extends a result). Does not own: metric
definitions (`qtts_sweep.metrics`), training, Optuna, MLflow.

Modules: `line_cache`, `scoring`, `suite`, `synth`, `synth_command`.
Imports from the package: config, data, metrics, model, train, util.
"""
