"""LoRA on the talker (and its code predictor) through peft: inject, list trainables, save/load, set the scale.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the model keeps its own `generate` and
every qwen-tts code path works unchanged; one loaded base model serves every checkpoint and scale (load the
adapter weights, set the scale) without reloading.
"""

from __future__ import annotations

import re
from typing import Any

from qtts_sweep.config.schema import LoraConfig

ADAPTER = "default"
# Module paths of the transformer layers LoRA may adapt (the speaker encoder and codec are never touched).
SCOPES = {
    "talker": r"talker\.model\.layers\.\d+",
    "talker_and_code_predictor": r"talker\.(?:model|code_predictor\.model)\.layers\.\d+",
}


def target_regex(cfg: LoraConfig) -> str:
    """Full-match regex over module names: the configured projections inside the configured scope."""
    projections = "|".join(re.escape(m) for m in cfg.target_modules)
    return rf"^{SCOPES[cfg.scope]}\.(?:self_attn|mlp)\.(?:{projections})$"


def apply_lora(model: Any, cfg: LoraConfig, seed: int) -> list[str]:
    """Inject LoRA layers (seeded init), freeze everything else; return the adapted module names."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target_regex(cfg), bias="none"
    )
    inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    reset_lora(model, seed)
    return sorted({n.rsplit(".lora_", 1)[0] for n, _ in model.named_parameters() if "lora_" in n})


def reset_lora(model: Any, seed: int) -> None:
    """Seeded fresh LoRA init (A: kaiming-uniform, B: zeros) and scale 1, in module order.

    A freshly injected model and a reused one reset with the same seed get identical adapters, so a worker can
    train one training key after another on the same loaded base model.
    """
    import torch

    torch.manual_seed(seed)
    for layer in lora_layers(model):
        layer.reset_lora_parameters(ADAPTER, init_lora_weights=True)
        layer.set_scale(ADAPTER, 1.0)


def lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def set_lora_scale(model: Any, scale: float) -> None:
    """scaling = scale * alpha / r on every LoRA layer (peft 0.21 has no model-level set_scale)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: apply_lora() or load an adapter first")
    for layer in layers:
        layer.set_scale(ADAPTER, scale)


def adapter_state_dict(model: Any) -> dict[str, Any]:
    """The trainable LoRA tensors (detached CPU copies), keyed by parameter name."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if "lora_" in n}


def load_adapter_state(model: Any, state: dict[str, Any]) -> None:
    """Copy saved LoRA tensors into an injected model; every key must exist (a partial adapter is an error)."""
    import torch

    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    absent = [k for k in params if "lora_" in k and k not in state]
    if missing or absent:
        raise ValueError(
            f"adapter does not match the model: {len(missing)} unknown, {len(absent)} missing keys "
            f"(e.g. {(missing + absent)[:2]}); was it trained with another lora config?"
        )
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))
