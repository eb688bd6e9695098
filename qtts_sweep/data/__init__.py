"""Data pipeline: read a manifest, validate every row before any model loads, resample, split, cache codec codes.

Owns: manifest formats, audio checks, the deterministic split, the prepared dataset on disk and its hash. Does not
own: the model (codes come from the model's own speech tokenizer through qtts_sweep.model), training, scoring.

Modules: `audio`, `codes`, `manifest`, `prepare`, `rows`, `speaker_check`, `split`.
Imports from the package: config, metrics, model, util.
"""
