"""The Qwen3-TTS model: loading (real or tiny preset), its token layout, the one training loss, LoRA adapters.

Owns: `modeling` (the only module that knows qwen-tts internals), `loss` (the loss training, validation,
evaluation and benchmarks import), `lora` (inject / reset / scale / save adapter tensors), `tiny` (the tiny preset
and the real shapes). Does not own: training loops, checkpoints, synthesis batching, metrics.

Modules: `lora`, `loss`, `modeling`, `tiny`.
Imports from the package: config, util.
"""
