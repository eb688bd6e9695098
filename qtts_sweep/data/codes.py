"""Codec codes for prepared audio: the model's 12 Hz `Qwen3TTSTokenizer`, batched, cached on disk.

Cache key: sha256 of the 24 kHz audio + the tokenizer identity (hash of its config and weights files, or the
hub id when the model is not a local folder). A re-run or an appended manifest only encodes what is new; a file
rewritten in place gets a new content hash and is re-encoded whatever its modification time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np


def tokenizer_identity(model_source: str) -> str:
    """A short stable id of the speech tokenizer that will produce the codes. Each file's digest is remembered by
    (path, size, mtime) (`util.digests`, like the model identity's), so an unchanged folder costs a few stats,
    not a re-hash of its weights, on every trial that asks."""
    from qtts_sweep.util.digests import file_sha256

    folder = Path(model_source) / "speech_tokenizer"
    if not folder.is_dir():
        return "hub-" + hashlib.sha256(model_source.encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return h.hexdigest()[:16]


def speech_tokenizer_dir(model_source: str) -> str:
    folder = Path(model_source) / "speech_tokenizer"
    if folder.is_dir():
        return str(folder)
    from huggingface_hub import snapshot_download

    return str(Path(snapshot_download(model_source, allow_patterns=["speech_tokenizer/*"])) / "speech_tokenizer")


class CodeCache:
    """`<cache>/<tokenizer id>/<audio sha256>.npy` holding int16 codes shaped (frames, 16 code groups)."""

    def __init__(self, root: Path, tokenizer_id: str):
        self.dir = Path(root) / tokenizer_id

    def path(self, audio_sha: str) -> Path:
        return self.dir / f"{audio_sha}.npy"

    def get(self, audio_sha: str) -> np.ndarray | None:
        p = self.path(audio_sha)
        return np.load(p) if p.is_file() else None

    def put(self, audio_sha: str, codes: np.ndarray) -> None:
        from qtts_sweep.util.fsio import atomic_file

        with atomic_file(self.path(audio_sha)) as tmp:
            np.save(tmp, codes.astype(np.int16))


def encode_missing(
    items: list[tuple[str, Path]],
    cache: CodeCache,
    model_source: str,
    device: str,
    batch_size: int,
    progress: Callable | None = None,
) -> int:
    """Encode every (audio sha, 24 kHz wav path) not yet cached; return how many were encoded.

    Batches are formed from clips sorted by length (less padding); the codec is causal, so a clip's codes do not
    depend on its batch-mates (tested).
    """
    todo = [(sha, path) for sha, path in items if not cache.path(sha).is_file()]
    if not todo:
        return 0
    import soundfile as sf

    from qtts_sweep.model.modeling import load_speech_tokenizer

    tok = load_speech_tokenizer(speech_tokenizer_dir(model_source), device)
    wavs = {sha: sf.read(str(path), dtype="float32")[0] for sha, path in todo}
    order = sorted(wavs, key=lambda s: len(wavs[s]))
    bar = progress(total=len(order), desc="codec codes", unit="clip") if progress else None
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        enc = tok.encode([wavs[s] for s in batch], sr=24000)
        for sha, codes in zip(batch, enc.audio_codes, strict=True):
            cache.put(sha, codes.cpu().numpy())  # (frames, 16)
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()
    return len(todo)
