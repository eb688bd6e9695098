"""Loads a Qwen3-TTS Base model (real or tiny preset) as configured; the one place that knows the model's internals.

Everything that touches attribute paths of `qwen_tts` (talker, code predictor, speaker encoder, speech
tokenizer, special ids) goes through this module, so a qwen-tts upgrade is checked in one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtts_sweep.schema import ModelConfig

SAMPLE_RATE = 24000  # the 12 Hz codec and the speaker encoder only accept 24 kHz


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_attn(attn: str, device: str) -> str:
    if attn != "auto":
        return attn
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            return "sdpa"
    return "sdpa"


def ensure_model_folder(cfg: ModelConfig) -> str:
    """The folder or hub id to load. For the tiny preset, create the folder on first use (offline)."""
    if not cfg.tiny:
        return cfg.source
    folder = Path(cfg.source)
    if not (folder / "config.json").is_file() or not (folder / "speech_tokenizer" / "config.json").is_file():
        from qtts_sweep.tiny import build_tiny_model

        build_tiny_model(folder, seed=cfg.tiny_seed)
    return str(folder)


@dataclass
class LoadedModel:
    """A loaded `qwen_tts.Qwen3TTSModel` plus what was resolved to load it."""

    tts: Any  # qwen_tts.Qwen3TTSModel
    source: str
    device: str
    dtype: Any

    @property
    def model(self):
        """The `Qwen3TTSForConditionalGeneration`."""
        return self.tts.model


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load through `Qwen3TTSModel.from_pretrained`, the same path as a real checkpoint.

    The tiny preset never touches the network: its folder is local and the Hugging Face hub is switched to
    offline mode before transformers is imported.
    """
    if cfg.tiny or cfg.local_files_only:
        os.environ["HF_HUB_OFFLINE"] = "1"
    source = ensure_model_folder(cfg)
    from qwen_tts import Qwen3TTSModel

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    tts = Qwen3TTSModel.from_pretrained(
        source,
        device_map=device,
        dtype=dtype,
        attn_implementation=resolve_attn(cfg.attn_implementation, device),
        local_files_only=cfg.tiny or cfg.local_files_only,
    )
    tts.model.eval()
    return LoadedModel(tts=tts, source=source, device=device, dtype=dtype)


def load_audio_24k(path: str | os.PathLike) -> Any:
    """Mono float32 waveform at 24 kHz (librosa's soxr resampler)."""
    import librosa

    wav, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True)
    return wav


def speaker_embedding(loaded: LoadedModel, wav_24k: Any):
    """The Base model's x-vector for a 24 kHz reference waveform (its own ECAPA speaker encoder)."""
    import numpy as np

    return loaded.model.extract_speaker_embedding(np.asarray(wav_24k, dtype=np.float32), SAMPLE_RATE)


def synthesize_voice_clone(
    loaded: LoadedModel, texts: list[str], spk_embedding, seed: int, max_new_tokens: int, **decoding: Any
) -> tuple[list[Any], int]:
    """Base-model synthesis from a speaker embedding (x-vector mode), language auto, non-streaming.

    That prompt layout is exactly the one the upstream fine-tuning dataset builds (see DOMAIN.md).
    """
    import torch
    from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem

    item = VoiceClonePromptItem(ref_code=None, ref_spk_embedding=spk_embedding, x_vector_only_mode=True, icl_mode=False)
    torch.manual_seed(seed)
    wavs, sr = loaded.tts.generate_voice_clone(
        text=texts,
        language=["auto"] * len(texts),
        voice_clone_prompt=[item] * len(texts),
        non_streaming_mode=True,
        max_new_tokens=max_new_tokens,
        **decoding,
    )
    return wavs, sr
