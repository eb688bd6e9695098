"""Synthesis from base model + checkpoint + LoRA scale, with the prompt layout training used.

A `Synthesizer` loads the base model once and injects LoRA layers once; switching checkpoint (load adapter
tensors + speaker embedding) or scale (`set_scale` on every LoRA layer) never reloads it. Scale 0 is the base
model exactly. Decoding is part of the evaluation config: production sampling with a fixed seed per batch of
lines (batches are formed from the line order, so the composition is fixed), or greedy.

Not here: metrics and caching of results (scoring.py), reading checkpoint files (train/store.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config, DecodingConfig
from qtts_sweep.train.store import read_adapter, read_speaker_embedding

WARMUP_FRAMES = 8  # decode a short dummy sequence once: the first decode after load can be corrupted (#219)


@dataclass
class Line:
    """A line to speak: id, text, and (for held-out lines) its ground truth."""

    id: str
    text: str
    audio: str | None = None  # 24 kHz ground-truth wav
    codes: list | None = None  # ground-truth codec codes (frames x 16)


@dataclass
class Synthesized:
    line: Line
    seed_index: int
    codes: Any  # (N, 16) LongTensor on CPU
    wav: Any  # float32 numpy, 24 kHz
    max_new_tokens: int
    hit_cap: bool  # never emitted EOS: counted as a failure


def max_new_tokens_for(text: str, dec: DecodingConfig) -> int:
    """Token cap from the text length; a line that reaches it never emitted EOS."""
    return int(dec.frames_per_char * len(text)) + dec.min_frames


def decoding_kwargs(dec: DecodingConfig) -> dict[str, Any]:
    sample = dec.mode == "sample"
    return {
        "do_sample": sample,
        "top_k": dec.top_k,
        "top_p": dec.top_p,
        "temperature": dec.temperature,
        "repetition_penalty": dec.repetition_penalty,
        "subtalker_dosample": sample,
        "subtalker_top_k": dec.subtalker_top_k,
        "subtalker_top_p": dec.subtalker_top_p,
        "subtalker_temperature": dec.subtalker_temperature,
    }


def batch_seed(base_seed: int, seed_index: int, line_ids: list[str]) -> int:
    """Seed of one generation batch: a function of the decoding seed, the repeat index and the batch's lines."""
    h = hashlib.sha256((f"{base_seed}\0{seed_index}\0" + "\0".join(line_ids)).encode())
    return int.from_bytes(h.digest()[:4], "big")


class Synthesizer:
    """One loaded base model serving any (checkpoint, scale)."""

    def __init__(self, cfg: Config, warmup: bool = True):
        from qtts_sweep.model import modeling
        from qtts_sweep.model.lora import apply_lora

        self.cfg = cfg
        self.loaded = modeling.load_model(cfg.model)
        self.model = self.loaded.model
        apply_lora(self.model, cfg.lora, seed=cfg.train.seed)
        self.model.eval()
        self._zero_adapter()
        self.checkpoint: Path | None = None
        self.scale = 0.0
        self.spk_embedding = None
        if warmup:
            self.warmup()

    def warmup(self) -> None:
        import torch

        groups = self.model.config.talker_config.num_code_groups
        self.model.speech_tokenizer.decode([{"audio_codes": torch.zeros(WARMUP_FRAMES, groups, dtype=torch.long)}])

    def _zero_adapter(self) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if "lora_" in name:
                    p.zero_()

    def use(self, checkpoint: Path | None, scale: float, spk_embedding: Any | None = None) -> None:
        """Switch to an epoch folder's (or a bundle's) adapter (None: the base model) at `scale`.

        The files are read through the checkpoint store, which checks an epoch folder against its manifest and
        raises `CorruptEntry` naming the file (the folder then moved aside) instead of loading damaged tensors.
        """
        from qtts_sweep.model.lora import load_adapter_state, set_lora_scale

        if checkpoint is None:
            self._zero_adapter()
            if spk_embedding is None and self.spk_embedding is None:
                raise ValueError("the base model needs a speaker embedding: pass spk_embedding")
        elif checkpoint != self.checkpoint:
            load_adapter_state(self.model, read_adapter(checkpoint))
            spk_embedding = spk_embedding if spk_embedding is not None else read_speaker_embedding(checkpoint)
        if spk_embedding is not None:
            self.spk_embedding = spk_embedding.to(self.loaded.device, self.model.dtype)
        set_lora_scale(self.model, scale)
        self.checkpoint, self.scale = checkpoint, scale

    def generate(
        self, lines: list[Line], dec: DecodingConfig, batch_size: int, seed_index: int = 0, decode_audio: bool = True
    ) -> list[Synthesized]:
        """Codes (and 24 kHz audio) for every line, in fixed batches of `batch_size` in line order."""
        from qtts_sweep.model import modeling

        out: list[Synthesized] = []
        kwargs = decoding_kwargs(dec)
        for start in range(0, len(lines), batch_size):
            batch = lines[start : start + batch_size]
            caps = [max_new_tokens_for(line.text, dec) for line in batch]
            seed = batch_seed(dec.seed, seed_index, [line.id for line in batch])
            codes = modeling.generate_codes(
                self.loaded,
                [line.text for line in batch],
                self.spk_embedding,
                max_new_tokens=max(caps),
                seed=seed,
                **kwargs,
            )
            # A line that reached its own cap never emitted EOS (qwen-tts returns cap-1 frames then).
            codes = [c[: cap - 1].cpu() for c, cap in zip(codes, caps, strict=True)]
            hits = [c.shape[0] >= cap - 1 for c, cap in zip(codes, caps, strict=True)]
            wavs = [None] * len(batch)
            if decode_audio:
                nonempty = [i for i, c in enumerate(codes) if c.shape[0] > 0]
                if nonempty:
                    decoded, _ = modeling.decode_codes(self.loaded, [codes[i] for i in nonempty])
                    for i, w in zip(nonempty, decoded, strict=True):
                        wavs[i] = w
                import numpy as np

                wavs = [w if w is not None else np.zeros(0, dtype=np.float32) for w in wavs]
            for line, c, w, cap, hit in zip(batch, codes, wavs, caps, hits, strict=True):
                out.append(Synthesized(line, seed_index, c, w, cap, hit))
        return out
