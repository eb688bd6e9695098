"""Export: a bundle's adapter merged at its promoted scale into a standalone custom-voice model folder.

Plain `Qwen3TTSModel.from_pretrained(folder).generate_custom_voice(..., speaker=<name>)` loads the result: no
peft, no qtts-sweep. Owns the merge and the custom-voice config edits; does not own the bundle format.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.production.bundle import Bundle, resolve_bundle
from qtts_sweep.production.serve import bundle_synthesizer


def _unload_lora(model: Any) -> int:
    """Merge every LoRA layer at its current scale into its base layer and put the base layer back."""
    from qtts_sweep.model.lora import lora_layers

    names = {id(m): n for n, m in model.named_modules()}
    merged = 0
    for layer in lora_layers(model):
        layer.merge(safe_merge=True)
        parent_name, _, child = names[id(layer)].rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
        merged += 1
    return merged


def _base_folder(bundle: Bundle, local_files_only: bool) -> Path:
    if Path(bundle.base_model).is_dir():
        return Path(bundle.base_model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(bundle.base_model, local_files_only=local_files_only))


def export_merged(cfg: Config, where: str, out: str | os.PathLike, speaker: str | None = None) -> Path:
    """A standalone custom-voice model folder: adapter merged at the promoted scale, the speaker's embedding in a
    new codec-embedding row (`spk_id`, `spk_is_dialect`), no speaker encoder. Plain
    `Qwen3TTSModel.from_pretrained(folder).generate_custom_voice(..., speaker=<name>)` loads it: no peft, no
    qtts-sweep."""
    import torch

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="qtts-bundle-") as tmp:
        bundle = resolve_bundle(cfg.tracking, where, Path(tmp))
        synth = bundle_synthesizer(cfg, bundle)
        model = synth.model
        name = (speaker or bundle.speaker).lower()
        n = _unload_lora(model)
        tcfg = model.config.talker_config
        taken = set(vars(tcfg).get("codec_language_id", {}).values()) | {
            tcfg.codec_eos_token_id,
            tcfg.codec_bos_id,
            tcfg.codec_pad_id,
            tcfg.codec_think_id,
            tcfg.codec_nothink_id,
            tcfg.codec_think_bos_id,
            tcfg.codec_think_eos_id,
        }
        # Speaker rows live among the ids generation always suppresses (the top 1024), so never sampled as audio.
        spk_id = next(i for i in range(tcfg.vocab_size - 1, tcfg.vocab_size - 1024, -1) if i not in taken)
        with torch.no_grad():
            model.talker.get_input_embeddings().weight[spk_id] = synth.spk_embedding.to(model.dtype)
        model.speaker_encoder = None  # a custom-voice config builds none
        base = _base_folder(bundle, cfg.model.local_files_only)
        from qtts_sweep.util.fsio import atomic_folder

        with atomic_folder(out) as stage:
            for item in base.iterdir():
                if (
                    item.name.endswith(".safetensors")
                    or item.name.endswith(".bin")
                    or item.name == "config.json"
                    or item.name.endswith(".index.json")
                ):
                    continue
                dst = stage / item.name
                shutil.copytree(item, dst) if item.is_dir() else shutil.copy2(item, dst)
            # Not save_pretrained: its config diffing trips over the loaded sub-configs' `dtype` (transformers
            # 4.57); the full config dict and safetensors' shared-tensor-aware writer give the same folder layout.
            from safetensors.torch import save_model

            save_model(model, str(stage / "model.safetensors"), metadata={"format": "pt"})
            config = json.loads((base / "config.json").read_text())  # same architecture: edit only what changed
            config["tts_model_type"] = "custom_voice"
            config["talker_config"]["spk_id"] = {name: spk_id}
            config["talker_config"]["spk_is_dialect"] = {name: False}
            (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            from qtts_sweep.model.tiny import normalize_json_files

            normalize_json_files(stage)  # drop the empty speaker-encoder model_type that breaks reloading
            info = {"merged_lora_layers": n, "lora_scale": bundle.lora_scale, "speaker": name, "spk_id": spk_id}
            (stage / "qtts_export.json").write_text(json.dumps(info) + "\n")
    return out
