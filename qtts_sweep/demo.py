"""`make demo` / `qtts-sweep demo`: the tiny preset end to end, as far as the pipeline goes today.

Prepares the demo dataset (validate, resample to 24 kHz, split, codec codes; cached), loads the tiny model
through `Qwen3TTSModel.from_pretrained`, computes the speaker embedding of the prepared reference clip,
synthesizes one val line and says where everything went.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtts_sweep.schema import Config


def max_new_tokens_for(text: str, frames_per_char: float, min_frames: int) -> int:
    """Token cap from the text length: a line that reaches it never emitted EOS."""
    return int(frames_per_char * len(text)) + min_frames


def run_demo(cfg: Config) -> Path:
    import soundfile as sf

    from qtts_sweep import modeling
    from qtts_sweep.data.prepare import format_summary, prepare_dataset

    t0 = time.perf_counter()
    out_dir = Path(cfg.paths.runs_dir) / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] preparing dataset `{cfg.data.name}`")
    ds = prepare_dataset(cfg)
    print(format_summary(ds))
    print(f"[2/4] model: {cfg.model.name} ({cfg.model.source})")
    loaded = modeling.load_model(cfg.model)
    print(f"[3/4] speaker embedding from {ds.ref_audio}")
    emb = modeling.speaker_embedding(loaded, modeling.load_audio_24k(ds.ref_audio))
    dec = cfg.eval.decoding
    line = ds.splits[cfg.eval.split][0]["text"]
    print(f"[4/4] synthesizing the first {cfg.eval.split} line ({dec.mode} decoding, seed {dec.seed}): {line!r}")
    wavs, sr = modeling.synthesize_voice_clone(
        loaded,
        [line],
        emb,
        seed=dec.seed,
        max_new_tokens=max_new_tokens_for(line, dec.frames_per_char, dec.min_frames),
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
        f"  dataset      : {ds.dir} (hash {ds.hash})\n"
        f"  model folder : {loaded.source}\n"
        f"  audio        : {wav_path} ({secs:.2f} s at {sr} Hz; random weights, so it is noise)\n"
        "Next: training, the sweep and promotion land with the following issues."
    )
    return wav_path
