"""Loads a Qwen3-TTS Base model (real or tiny preset) as configured; the one place that knows the model's internals.

Everything that touches attribute paths of `qwen_tts` (talker, code predictor, speaker encoder, speech
tokenizer, special ids) goes through this module, so a qwen-tts upgrade is checked in one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import ModelConfig
from qtts_sweep.util import quiet

SAMPLE_RATE = 24000  # the 12 Hz codec and the speaker encoder only accept 24 kHz


def load_speech_tokenizer(folder: str, device: str):
    """The 12 Hz speech tokenizer (codec) of a model folder, in fp32 (codes must not depend on the dtype)."""
    import torch
    from qwen_tts import Qwen3TTSTokenizer

    return Qwen3TTSTokenizer.from_pretrained(str(folder), device_map=resolve_device(device), dtype=torch.float32)


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
            quiet.note(quiet.FLASH_ATTN_NOTE)
            return "sdpa"
    return "sdpa"


def ensure_model_folder(cfg: ModelConfig) -> str:
    """The folder or hub id to load. For the tiny preset, create the folder on first use (offline)."""
    if not cfg.tiny:
        return cfg.source
    folder = Path(cfg.source)
    if not (folder / "config.json").is_file() or not (folder / "speech_tokenizer" / "config.json").is_file():
        from qtts_sweep.model.tiny import build_tiny_model

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

    emb = loaded.model.extract_speaker_embedding(np.asarray(wav_24k, dtype=np.float32), SAMPLE_RATE)
    return emb.clone()  # an inference-mode tensor cannot enter autograd; the clone can


# ---------------------------------------------------------------------------------------------------------------
# The dual-channel prompt layout, shared by training and synthesis.
#
# Talker input, one row per position (text channel + codec channel, summed), for language "auto",
# non-streaming, with a speaker embedding (what `generate(..., languages=["auto"], non_streaming_mode=True)`
# builds and what the upstream fine-tuning dataset trains):
#   3 role tokens `<|im_start|>assistant\n`          text only
#   tts_pad + nothink, tts_pad + think_bos, tts_pad + think_eos, tts_pad + speaker, tts_bos + codec_pad
#   each text token + codec_pad, then tts_eos + codec_pad
#   tts_pad + codec_bos                               <- predicts codebook 0 of frame 0
#   tts_pad + sum of the 16 code embeddings of frame q (q = 0..N-1)  <- predicts frame q+1 (EOS after N-1)
# ---------------------------------------------------------------------------------------------------------------
ROLE_TOKENS = 3  # `<|im_start|>assistant\n`
SUFFIX_TOKENS = 5  # `<|im_end|>\n<|im_start|>assistant\n`


def assistant_text(text: str) -> str:
    """The chat wrapper qwen-tts tokenizes a line in (`Qwen3TTSModel._build_assistant_text`)."""
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def tokenize_line(tts: Any, text: str):
    """(role ids (3,), text ids (T,)) of one line, as generation tokenizes it."""
    ids = tts.processor(text=assistant_text(text), return_tensors="pt", padding=True)["input_ids"][0]
    return ids[:ROLE_TOKENS], ids[ROLE_TOKENS:-SUFFIX_TOKENS]


def _text_embed(model: Any, ids):
    # Text goes through `talker.text_projection`, exactly as inference does (upstream bug #39 skipped it).
    return model.talker.text_projection(model.talker.get_text_embeddings()(ids))


def _codec_embed(model: Any, ids):
    return model.talker.get_input_embeddings()(ids)


def frame_input_embeds(model: Any, codes):
    """Codec-channel embedding of whole frames: sum of the 16 code embeddings. codes: (..., 16) -> (..., D)."""
    talker = model.talker
    total = talker.get_input_embeddings()(codes[..., 0])
    for g in range(1, codes.shape[-1]):
        total = total + talker.code_predictor.get_input_embeddings()[g - 1](codes[..., g])
    return total


def prompt_embeds(model: Any, role_ids, text_ids, spk_embedding):
    """The prompt (everything before the first audio frame) for one line: (L, D) with L = len(text_ids) + 10."""
    import torch

    cfg, tcfg = model.config, model.config.talker_config
    dev = model.talker.device
    special = torch.tensor([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id], device=dev)
    tts_bos, tts_eos, tts_pad = _text_embed(model, special)  # (D,) each
    tags = torch.tensor([tcfg.codec_nothink_id, tcfg.codec_think_bos_id, tcfg.codec_think_eos_id], device=dev)
    codec_prefix = torch.cat(
        [
            _codec_embed(model, tags),
            spk_embedding.to(tts_pad.dtype).view(1, -1),
            _codec_embed(model, torch.tensor([tcfg.codec_pad_id], device=dev)),
        ]
    )  # (5, D): nothink, think_bos, think_eos, speaker slot, pad
    text_chan = torch.cat([tts_pad.expand(4, -1), tts_bos.view(1, -1)])  # (5, D)
    pad_row = _codec_embed(model, torch.tensor(tcfg.codec_pad_id, device=dev))
    bos_row = _codec_embed(model, torch.tensor(tcfg.codec_bos_id, device=dev))
    body = torch.cat([_text_embed(model, text_ids.to(dev)), tts_eos.view(1, -1)]) + pad_row  # (T+1, D)
    return torch.cat(
        [_text_embed(model, role_ids.to(dev)), text_chan + codec_prefix, body, (tts_pad + bos_row).view(1, -1)]
    )


def tts_pad_embed(model: Any):
    import torch

    return _text_embed(model, torch.tensor(model.config.tts_pad_token_id, device=model.talker.device))


def utterance_embeds(model: Any, role_ids, text_ids, spk_embedding, codes):
    """Full teacher-forced talker input for one utterance: (L + N, D); returns (embeds, L)."""
    import torch

    prompt = prompt_embeds(model, role_ids, text_ids, spk_embedding)
    frames = frame_input_embeds(model, codes.to(prompt.device)) + tts_pad_embed(model)  # (N, D)
    return torch.cat([prompt, frames]), prompt.shape[0]


def talker_hidden(model: Any, inputs_embeds, attention_mask):
    """Last hidden states of the talker transformer for right-padded inputs: (B, T, H).

    Position ids come from the attention mask exactly as generation computes them (`get_rope_index`).
    """
    position_ids, _ = model.talker.get_rope_index(attention_mask)
    out = model.talker.model(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    return out.last_hidden_state


def talker_logits(model: Any, hidden):
    return model.talker.codec_head(hidden)


def code_predictor_logits(model: Any, context_hidden, codes):
    """Logits of code-predictor heads 1..15 for frames: context_hidden (M, H), codes (M, 16) -> (M, 15, V).

    Input sequence per frame (as in generation): [talker state that predicted codebook 0 of this frame,
    codec embedding of code 0, code-predictor embeddings of codes 1..14]; head i reads position i.
    """
    import torch

    talker = model.talker
    parts = [context_hidden.unsqueeze(1), talker.get_input_embeddings()(codes[:, :1])]
    for g in range(1, codes.shape[1] - 1):
        parts.append(talker.code_predictor.get_input_embeddings()[g - 1](codes[:, g : g + 1]))
    return talker.code_predictor.forward_finetune(inputs_embeds=torch.cat(parts, dim=1)).logits


def special_ids(model: Any) -> dict[str, int]:
    """Codec special ids from the model config (never hard-coded)."""
    t = model.config.talker_config
    return {
        "eos": t.codec_eos_token_id,
        "bos": t.codec_bos_id,
        "pad": t.codec_pad_id,
        "vocab": t.vocab_size,
        "groups": t.num_code_groups,
    }


def generate_codes(
    loaded: LoadedModel, texts: list[str], spk_embedding, max_new_tokens: int, seed: int = 0, **decoding: Any
) -> list[Any]:
    """Codec codes (N_i, 16) per line from the Base model's x-vector path: language auto, non-streaming.

    A line that never emitted EOS comes back with `max_new_tokens - 1` frames (qwen-tts drops the last step).
    Batched generation left-pads and shares one random generator, so sampled output reproduces only with the
    same batch composition and seed.
    """
    import torch

    tts = loaded.tts
    input_ids = [tts.processor(text=assistant_text(t), return_tensors="pt")["input_ids"].to(tts.device) for t in texts]
    prompt = {
        "ref_code": None,
        "ref_spk_embedding": [spk_embedding] * len(texts),
        "x_vector_only_mode": [True] * len(texts),
        "icl_mode": [False] * len(texts),
    }
    gen = tts._merge_generate_kwargs(max_new_tokens=max_new_tokens, **decoding)
    torch.manual_seed(seed)
    codes, _ = loaded.model.generate(
        input_ids=input_ids,
        voice_clone_prompt=prompt,
        languages=["auto"] * len(texts),
        non_streaming_mode=True,
        **gen,
    )
    return codes


def decode_codes(loaded: LoadedModel, codes: list[Any]) -> tuple[list[Any], int]:
    """24 kHz waveforms from codec codes (N, 16) per line."""
    return loaded.model.speech_tokenizer.decode([{"audio_codes": c} for c in codes])


GREEDY = {"do_sample": False, "subtalker_dosample": False, "repetition_penalty": 1.0}
