"""`make demo` / `qtts-sweep demo`: the tiny preset end to end, as far as the pipeline goes today.

Creates the tiny model folder (if missing), loads it through `Qwen3TTSModel.from_pretrained`, computes the
speaker embedding of the demo reference clip, synthesizes one line and says where everything went.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from qtts_sweep.schema import Config

DEMO_LINE = "Hello, this is the tiny preset speaking; its weights are random, so expect noise."


def _reference_clip(cfg: Config) -> Path:
    if cfg.data.ref_audio:
        return Path(cfg.data.ref_audio)
    manifest = Path(cfg.data.manifest)
    first = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    return manifest.parent / first["ref_audio"]


def max_new_tokens_for(text: str, frames_per_char: float, min_frames: int) -> int:
    """Token cap from the text length: a line that reaches it never emitted EOS."""
    return int(frames_per_char * len(text)) + min_frames


def run_demo(cfg: Config) -> Path:
    import soundfile as sf

    from qtts_sweep import modeling

    t0 = time.perf_counter()
    out_dir = Path(cfg.paths.runs_dir) / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] model: {cfg.model.name} ({cfg.model.source})")
    loaded = modeling.load_model(cfg.model)
    ref = _reference_clip(cfg)
    print(f"[2/3] speaker embedding from {ref}")
    emb = modeling.speaker_embedding(loaded, modeling.load_audio_24k(ref))
    dec = cfg.eval.decoding
    print(f"[3/3] synthesizing one line ({dec.mode} decoding, seed {dec.seed})")
    wavs, sr = modeling.synthesize_voice_clone(
        loaded,
        [DEMO_LINE],
        emb,
        seed=dec.seed,
        max_new_tokens=max_new_tokens_for(DEMO_LINE, dec.frames_per_char, dec.min_frames),
        do_sample=dec.mode == "sample",
        temperature=dec.temperature,
        top_k=dec.top_k,
        top_p=dec.top_p,
        repetition_penalty=dec.repetition_penalty,
        subtalker_dosample=dec.mode == "sample",
        subtalker_temperature=dec.subtalker_temperature,
        subtalker_top_k=dec.subtalker_top_k,
        subtalker_top_p=dec.subtalker_top_p,
    )
    wav_path = out_dir / "tiny_line.wav"
    sf.write(wav_path, wavs[0], sr)
    secs = len(wavs[0]) / sr
    print(
        f"\nDone in {time.perf_counter() - t0:.1f} s.\n"
        f"  model folder : {loaded.source}\n"
        f"  audio        : {wav_path} ({secs:.2f} s at {sr} Hz; random weights, so it is noise)\n"
        "Next: the data pipeline, training and the sweep land with the following issues."
    )
    return wav_path
