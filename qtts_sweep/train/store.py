"""Content-addressed checkpoint store: the training key, and atomic per-epoch checkpoint folders.

`runs/store/<key>/epoch-<e>/` holds the adapter (safetensors), the speaker embedding, optimizer/scheduler/RNG
state, the resolved config and the epoch's metrics. The key hashes everything that changes what epoch e
contains — the resolved model/data/lora/train config minus `KEY_EXCLUDED`, the prepared-data hash, the reference
audio, the model's identity, library versions and the source of the loss and training loop — so any trial that
asks for (key, e) can reuse it. Writes go to a temp folder renamed into place: a partial checkpoint is never
visible under its final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config

KEY_GROUPS = ("model", "data", "lora", "train")
# Leaves that do not change what a checkpoint contains, or are replaced by a content hash. Each has a reason:
KEY_EXCLUDED = {
    "train.epochs": "how far one call trains; the schedule horizon is train.max_epochs",
    "model.device": "where it runs (cuda:0 vs cuda:1); dtype is kept",
    "model.source": "replaced by the model identity (content of the folder, or the hub id)",
    "model.local_files_only": "how the model is fetched, not what it is",
    "model.name": "a label; the model identity decides",
    "data.name": "a label and output folder; the prepared-data hash decides",
    "data.manifest": "a path; the prepared-data hash covers its content",
    "data.root": "a path; the prepared-data hash covers its content",
    "data.ref_audio": "a path; the reference audio's content hash is in the key",
    "data.strict": "changes the rows kept, which the prepared-data hash covers",
    "data.codec_batch_size": "codes do not depend on batch composition (tested)",
}
TRAINING_SOURCES = ("model/loss.py", "train/loop.py", "model/modeling.py", "model/lora.py")  # relative to the package
LIBRARIES = ("qwen-tts", "torch", "transformers", "peft")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: obj}


def config_leaves(cfg: Config) -> dict[str, Any]:
    """Every leaf of the groups that define a training run, dotted, minus the excluded ones."""
    leaves: dict[str, Any] = {}
    for group in KEY_GROUPS:
        leaves.update(_flatten(getattr(cfg, group), group))
    return {k: v for k, v in leaves.items() if k not in KEY_EXCLUDED}


def _file_digest(path: Path, full_limit: int = 64 * 2**20) -> str:
    """Full sha256 for small files; for big weight files, size + first/last MiB (hashing GBs per call is slow)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= full_limit:
            h.update(f.read())
        else:
            h.update(f.read(2**20))
            f.seek(-(2**20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()


def model_identity(source: str) -> str:
    """Content identity of a local model folder (configs + weight files), or the hub id as given."""
    folder = Path(source)
    if not folder.is_dir():
        return f"hub:{source}"
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + _file_digest(path).encode())
    return h.hexdigest()[:16]


def source_hash() -> str:
    """Hash of the loss, training-loop, layout and LoRA source files: a code change invalidates checkpoints."""
    here = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in TRAINING_SOURCES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {lib: metadata.version(lib) for lib in LIBRARIES}


def key_material(cfg: Config, dataset_hash: str, ref_sha256: str, model_id: str) -> dict[str, Any]:
    return {
        "config": config_leaves(cfg),
        "dataset_hash": dataset_hash,
        "reference_audio": ref_sha256,
        "model": model_id,
        "versions": library_versions(),
        "source": source_hash(),
    }


def training_key(material: dict[str, Any]) -> str:
    blob = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CheckpointStore:
    """Per-key folders of complete epochs; only fully written epochs are listed."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key_dir(self, key: str) -> Path:
        return self.root / key

    def epoch_dir(self, key: str, epoch: int) -> Path:
        return self.key_dir(key) / f"epoch-{epoch}"

    def epochs(self, key: str) -> list[int]:
        d = self.key_dir(key)
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit() and (p / "COMPLETE").is_file():
                found.append(int(p.name[6:]))
        return sorted(found)

    def latest_at_most(self, key: str, epoch: int) -> int | None:
        done = [e for e in self.epochs(key) if e <= epoch]
        return max(done) if done else None

    def write_material(self, key: str, material: dict[str, Any]) -> None:
        from qtts_sweep.util.fsio import write_text_atomic

        target = self.key_dir(key) / "key.json"
        if not target.is_file():
            write_text_atomic(target, json.dumps(material, indent=2, sort_keys=True, default=str) + "\n")

    def save_epoch(self, key: str, epoch: int, files: dict[str, Any]) -> Path:
        """Write {name: writer(path)} into a temp folder, mark it COMPLETE, rename it into place."""
        from qtts_sweep.util.fsio import atomic_folder

        final = self.epoch_dir(key, epoch)
        with atomic_folder(final) as tmp:  # a stale copy from an interrupted run is replaced
            for name, write in files.items():
                write(tmp / name)
            (tmp / "COMPLETE").write_text("ok\n")
        return final
