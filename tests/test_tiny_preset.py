"""The tiny preset: real qwen-tts code, tiny configs, random weights, loadable offline like a real checkpoint."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from qtts_sweep.model.tiny import build_tiny_model, folder_digest
from tests.helpers.sweeps import DEMO_DIR


def test_same_seed_gives_a_byte_identical_folder(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert folder_digest(again) == folder_digest(tiny_model_dir)
    assert folder_digest(other) != folder_digest(tiny_model_dir)


def test_folder_has_what_from_pretrained_needs(tiny_model_dir):
    for rel in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "speech_tokenizer/config.json",
        "speech_tokenizer/model.safetensors",
        "speech_tokenizer/preprocessor_config.json",
    ]:
        assert (tiny_model_dir / rel).is_file(), rel
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert "model_type" not in config["speaker_encoder_config"]  # "" breaks reloading
    assert config["tts_model_type"] == "base"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loads_offline_and_generates_24khz_audio(tiny_model_dir, no_network):
    from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.model.modeling import load_audio_24k, load_model, speaker_embedding

    loaded = load_model(load_config(["model=tiny"]).model)
    assert type(loaded.model).__name__ == "Qwen3TTSForConditionalGeneration"
    emb = speaker_embedding(loaded, load_audio_24k(DEMO_DIR / "ref" / "ref.flac"))
    assert emb.shape == (loaded.model.config.talker_config.hidden_size,)
    # qwen-tts' own public wrapper, x-vector mode, as a user of the model folder would call it
    item = VoiceClonePromptItem(ref_code=None, ref_spk_embedding=emb, x_vector_only_mode=True, icl_mode=False)
    wavs, sr = loaded.tts.generate_voice_clone(
        text=["Hello there."], language=["auto"], voice_clone_prompt=[item], non_streaming_mode=True, max_new_tokens=20
    )
    assert sr == 24000
    assert wavs[0].ndim == 1 and len(wavs[0]) % 1920 == 0 and len(wavs[0]) > 0
    assert np.isfinite(wavs[0]).all() and np.abs(wavs[0]).max() > 1e-3


def test_codec_is_not_degenerate_on_real_speech(tiny_loaded):
    from qtts_sweep.model.modeling import load_audio_24k

    wav = load_audio_24k(DEMO_DIR / "wavs" / "demo_0001.flac")
    codes = tiny_loaded.model.speech_tokenizer.encode(wav, sr=24000).audio_codes[0]
    assert codes.shape[1] == 16
    assert codes.shape[0] == int(np.ceil(len(wav) / 1920))  # 12.5 Hz frames at 24 kHz
    distinct = [len(torch.unique(codes[:, g])) for g in range(16)]
    assert min(distinct) >= 3, distinct  # a default random init gives code 0 everywhere
    audio, sr = tiny_loaded.model.speech_tokenizer.decode([{"audio_codes": codes}])
    assert sr == 24000 and len(audio[0]) == codes.shape[0] * 1920 and np.abs(audio[0]).max() > 1e-3


def test_text_layout_matches_the_dataset_convention(tiny_loaded):
    tok = tiny_loaded.tts.processor.tokenizer
    prefix = tok("<|im_start|>assistant\n")["input_ids"]
    suffix = tok("<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    full = tok("<|im_start|>assistant\nHi, it's me.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    assert len(prefix) == 3 and len(suffix) == 5
    assert full[:3] == prefix and full[-5:] == suffix
    assert tok.decode(full[3:-5]) == "Hi, it's me."
    cfg = tiny_loaded.model.config
    ids = {cfg.tts_pad_token_id, cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.im_start_token_id}
    assert max(ids) < cfg.talker_config.text_vocab_size and len(ids) == 4
