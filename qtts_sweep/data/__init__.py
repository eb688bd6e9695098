"""Data pipeline: read a manifest, validate every row before any model loads, resample, split, cache codec codes."""
