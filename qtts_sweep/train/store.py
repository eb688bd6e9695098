"""Content-addressed checkpoint store: the training key, and every write and read of an epoch folder.

`runs/store/<key>/epoch-<e>/` holds a `Checkpoint`: the adapter and the speaker embedding (safetensors), the
optimizer/scheduler/RNG state (safetensors for tensors + JSON for the rest: nothing is pickled, so loading runs
no code), the resolved config and the epoch's metrics, plus `manifest.json` with every file's sha256. The key
hashes everything that changes what epoch e contains — the resolved model/data/lora/train config minus
`KEY_EXCLUDED`, the prepared-data hash, the reference audio, the model's identity, library versions and the
source of the loss and training loop — so any trial that asks for (key, e) can reuse it. Writes go to a temp
folder renamed into place; loads check the manifest and move a damaged folder aside (docs/formats.md).

Not here: when to train, resume or reuse (`train.loop`); what the tensors mean (`qtts_sweep.model.lora`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.util.integrity import (
    MANIFEST,
    CorruptEntry,
    apply_modes,
    move_aside,
    quarantine,
    read_manifest,
    verified_bytes,
    verify_folder,
    warn_if_others_can_write,
    write_manifest,
)

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


FULL_HASH_CACHE_LIMIT = 64 * 2**20  # files above this are hashed once and their digest cached (see below)


def digest_cache_path() -> Path:
    """Where whole-file digests of big weight files are cached: `$XDG_CACHE_HOME/qtts-sweep/file-digests.json`
    (default `~/.cache/...`). Per user, not under runs/: the digest of a model folder is the same for every
    project, and a store shared with others must not be able to plant a digest for your files."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qtts-sweep" / "file-digests.json"


def _hash_file(path: Path, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**24), b""):
            h.update(block)
    return h.hexdigest()


def _file_digest(path: Path, cache: dict[str, str], cache_limit: int) -> str:
    """sha256 of size + the whole content. Hashing a multi-GB file takes seconds to minutes, so digests of files
    over `cache_limit` are cached by (absolute path, size, mtime_ns): any rewrite of the file changes its mtime."""
    st = path.stat()
    if st.st_size <= cache_limit:
        return _hash_file(path, st.st_size)
    prefix = f"{path.resolve()}\0"
    entry = f"{prefix}{st.st_size}\0{st.st_mtime_ns}"
    if entry not in cache:
        for stale in [k for k in cache if k.startswith(prefix)]:  # an older version of the same file
            del cache[stale]
        cache[entry] = _hash_file(path, st.st_size)
    return cache[entry]


def _read_digest_cache(path: Path) -> dict[str, str]:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or damaged: a cache, recomputed
    return {k: v for k, v in cache.items() if isinstance(v, str)} if isinstance(cache, dict) else {}


def model_identity(source: str, cache_limit: int = FULL_HASH_CACHE_LIMIT, cache_file: Path | None = None) -> str:
    """Content identity of a local model folder (relative names + whole-file digests), or the hub id as given."""
    folder = Path(source)
    if not folder.is_dir():
        return f"hub:{source}"
    from qtts_sweep.util.fsio import write_text_atomic

    cache_file = cache_file or digest_cache_path()
    cache = _read_digest_cache(cache_file)
    known = dict(cache)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + _file_digest(path, cache, cache_limit).encode())
    if cache != known:
        try:
            write_text_atomic(cache_file, json.dumps(cache, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only home only costs the next call another full hash
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


# ---- epoch folders: the only code that writes or reads files inside runs/store/<key>/epoch-<e>/ ----

ADAPTER = "adapter.safetensors"
SPEAKER = "speaker_embedding.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
TRAINING_LOG = "training-log.jsonl"


EPOCH_PREFIX = "epoch-"


@dataclass(frozen=True)
class CheckpointRef:
    """One epoch of one training key in a store: the one way code outside train/ names a checkpoint (a trial's
    `checkpoint` user attribute, a bundle's origin, gc, the tracker). `.path` is its folder."""

    root: Path
    key: str
    epoch: int

    @property
    def path(self) -> Path:
        return Path(self.root) / self.key / f"{EPOCH_PREFIX}{self.epoch}"

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> CheckpointRef:
        """The reference of an epoch folder path (`<root>/<key>/epoch-<e>`); ValueError for anything else."""
        p = Path(path)
        if not (p.name.startswith(EPOCH_PREFIX) and p.name[len(EPOCH_PREFIX) :].isdigit()):
            raise ValueError(f"{p} is not a checkpoint folder (<store>/<training key>/{EPOCH_PREFIX}<epoch>)")
        return cls(p.parent.parent, p.parent.name, int(p.name[len(EPOCH_PREFIX) :]))


@dataclass
class TrainerState:
    """What resuming needs beyond the adapter: optimizer and scheduler `state_dict()`s, the torch RNG state."""

    optimizer: dict
    scheduler: dict
    rng: Any  # uint8 tensor from torch.get_rng_state()
    epoch: int


@dataclass
class Checkpoint:
    """One epoch of one training key, as saved and loaded by `CheckpointStore` (tensors on CPU after load)."""

    adapter: dict[str, Any]  # LoRA tensor name -> tensor
    speaker_embedding: Any  # 1-D tensor
    metrics: dict[str, float]
    config_yaml: str
    trainer_state: TrainerState | None = None  # None when loaded without it


def _encode(obj: Any, tensors: dict[str, Any], where: str) -> Any:
    """A state_dict as JSON with tensors replaced by {"$tensor": name}: no pickle, so loading runs no code.

    Tuples and dicts with non-string keys (the optimizer's `state` is keyed by parameter index) are tagged so
    they come back as they were: `Optimizer.load_state_dict` matches state by int index.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().to("cpu").contiguous()
        return {"$tensor": name}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = [[_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")] for k, v in obj.items()]
        return {"$items": items}
    raise TypeError(f"trainer state field {where} has type {type(obj).__name__}, which the store cannot save")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"$tensor"}:
        return tensors[obj["$tensor"]]
    if set(obj) == {"$tuple"}:
        return tuple(_decode(v, tensors) for v in obj["$tuple"])
    if set(obj) == {"$items"}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["$items"]}
    raise ValueError(f"unexpected object with keys {sorted(obj)}")


def _safetensors_bytes(data: bytes, path: Path) -> dict[str, Any]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error type for every malformed header/body
        raise CorruptEntry(path, f"is not a valid safetensors file ({exc})") from exc


def _json_bytes(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptEntry(path, f"is not valid JSON ({exc})") from exc


def _speaker(data: bytes, path: Path) -> Any:
    tensors = _safetensors_bytes(data, path)
    if "spk_embedding" not in tensors:
        raise CorruptEntry(path, f"has no `spk_embedding` tensor (found {sorted(tensors)})")
    return tensors["spk_embedding"]


def read_adapter(folder: Path) -> dict[str, Any]:
    """Adapter tensors of an epoch folder (checked against its manifest) or of a bundle folder (no manifest)."""
    return _folder_read(Path(folder), ADAPTER, _safetensors_bytes)


def read_speaker_embedding(folder: Path) -> Any:
    """The speaker embedding of an epoch folder or a bundle folder."""
    return _folder_read(Path(folder), SPEAKER, _speaker)


def _folder_read(folder: Path, name: str, parse: Any) -> Any:
    """Parse a file of a folder given by path: checked (and the folder moved aside on failure) when it has a
    manifest, as epoch folders do; read as is otherwise (a bundle, whose loader checks its own recorded sha256s)."""
    path = folder / name
    if (folder / MANIFEST).is_file():
        try:
            return parse(verified_bytes(folder, name), path)
        except CorruptEntry as exc:
            raise quarantine(exc, folder) from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptEntry(path, f"cannot be read ({exc.strerror or exc})") from exc
    return parse(data, path)


class CheckpointStore:
    """Per-key folders of complete epochs; only fully written epochs (with a manifest) are listed.

    Every file of an epoch is listed with its sha256 in the epoch's `manifest.json` (written last, inside the
    temporary folder); every load checks it. A folder that fails is moved aside to `epoch-<e>.corrupt-<time>` and
    `CorruptEntry` (naming the file) is raised: the epoch is then missing, and `train.loop` retrains it.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key_dir(self, key: str) -> Path:
        return self.root / key

    def epoch_dir(self, key: str, epoch: int) -> Path:
        return CheckpointRef(self.root, key, epoch).path

    def adapter_file(self, key: str, epoch: int) -> Path:
        return self.epoch_dir(key, epoch) / ADAPTER

    def ref(self, key: str, epoch: int) -> CheckpointRef:
        return CheckpointRef(self.root, key, epoch)

    def stored(self) -> list[CheckpointRef]:
        """Every complete or incomplete `epoch-<e>` folder of every key (folders moved aside as corrupt are not
        listed: they are left for a person to look at)."""
        out = []
        for p in sorted(self.root.glob(f"*/{EPOCH_PREFIX}*")) if self.root.is_dir() else []:
            if p.is_dir() and p.name[len(EPOCH_PREFIX) :].isdigit():
                out.append(CheckpointRef.from_path(p))
        return out

    def read_material(self, key: str) -> dict[str, Any]:
        """What the key hashes (`key.json`, written when the key was first trained)."""
        return json.loads((self.key_dir(key) / "key.json").read_text(encoding="utf-8"))

    def epochs(self, key: str) -> list[int]:
        d = self.key_dir(key)
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            n = len(EPOCH_PREFIX)
            if p.is_dir() and p.name.startswith(EPOCH_PREFIX) and p.name[n:].isdigit() and (p / MANIFEST).is_file():
                found.append(int(p.name[n:]))
        return sorted(found)

    def latest_at_most(self, key: str, epoch: int) -> int | None:
        done = [e for e in self.epochs(key) if e <= epoch]
        return max(done) if done else None

    def log_training(self, key: str, epoch: int, event: str) -> None:
        """Append one line to the key's training log (`training-log.jsonl`): `start` when an epoch's training begins,
        `saved` once it is in place. Every epoch computed shows up, also one lost to a killed or stalled worker
        (a `start` without a `saved`), which the trials' own records cannot see. One short O_APPEND write per
        line: lines from concurrent workers never interleave on a local filesystem."""
        line = json.dumps({"epoch": epoch, "event": event, "pid": os.getpid(), "time": round(time.time(), 3)})
        self.key_dir(key).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key_dir(key) / TRAINING_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def training_log(self, key: str) -> list[dict[str, Any]]:
        """The key's training events in order (torn or foreign lines skipped)."""
        try:
            text = (self.key_dir(key) / TRAINING_LOG).read_text(encoding="utf-8")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
                out.append(rec)
        return out

    def keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def write_material(self, key: str, material: dict[str, Any]) -> None:
        from qtts_sweep.util.fsio import write_text_atomic

        target = self.key_dir(key) / "key.json"
        warn_if_others_can_write(self.root)
        if not target.is_file():
            write_text_atomic(target, json.dumps(material, indent=2, sort_keys=True, default=str) + "\n")
            apply_modes(self.key_dir(key))

    def save_epoch(
        self, key: str, epoch: int, checkpoint: Checkpoint, before_commit: Callable[[], None] | None = None
    ) -> Path:
        """Write every file into a temp folder, list them in its manifest, rename it into place.

        `before_commit()` (the training lease's check) runs before anything is touched and again just before the
        rename; raising there leaves nothing visible. A complete epoch (one with a readable manifest) already in
        place is never moved aside or replaced: the rename refuses (a non-empty folder is never replaced), the
        temp folder is dropped and the existing epoch is kept -- the same key and epoch hold the same training.
        Only a folder without a readable manifest (hand-made, an older format) is moved aside first.
        """
        from safetensors.torch import save_file

        final = self.epoch_dir(key, epoch)
        if before_commit is not None:
            before_commit()
        warn_if_others_can_write(self.root)
        if final.exists() and self._complete(final):
            return final
        if final.exists():
            move_aside(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            save_file({k: v.contiguous() for k, v in checkpoint.adapter.items()}, str(tmp / ADAPTER))
            spk = checkpoint.speaker_embedding.detach().to("cpu").contiguous()
            save_file({"spk_embedding": spk}, str(tmp / SPEAKER))
            if checkpoint.trainer_state is not None:
                self._write_state(tmp, checkpoint.trainer_state)
            (tmp / CONFIG).write_text(checkpoint.config_yaml, encoding="utf-8")
            (tmp / METRICS).write_text(json.dumps(checkpoint.metrics, indent=2, sort_keys=True) + "\n")
            write_manifest(tmp, {"key": key, "epoch": epoch})
            apply_modes(tmp)
            if before_commit is not None:
                before_commit()
            try:
                os.rename(tmp, final)  # refuses (ENOTEMPTY/EEXIST) when another writer's epoch is there
            except OSError:
                if not (final.exists() and self._complete(final)):
                    raise
                pass  # another writer committed this epoch first: theirs is kept
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _complete(folder: Path) -> bool:
        """A folder with a readable manifest: complete as written (its files are checked when loaded)."""
        try:
            read_manifest(folder)
        except CorruptEntry:
            return False
        return True

    @staticmethod
    def _write_state(folder: Path, state: TrainerState) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, Any] = {}
        body = {
            "optimizer": _encode(state.optimizer, tensors, "optimizer"),
            "scheduler": _encode(state.scheduler, tensors, "scheduler"),
            "rng": _encode(state.rng, tensors, "rng"),
            "epoch": state.epoch,
        }
        save_file(tensors, str(folder / STATE_TENSORS))
        (folder / STATE_JSON).write_text(json.dumps(body, sort_keys=True) + "\n")

    def _checked(self, key: str, epoch: int, read: Any) -> Any:
        """Run `read(folder, manifest)`; on any integrity or format failure move the folder aside and re-raise."""
        folder = self.epoch_dir(key, epoch)
        try:
            return read(folder, read_manifest(folder))
        except CorruptEntry as exc:
            raise quarantine(exc, folder) from exc

    def verify(self, key: str, epoch: int) -> None:
        """Check every file of an epoch against its manifest (CorruptEntry after moving it aside)."""
        self._checked(key, epoch, lambda folder, _: verify_folder(folder))

    def load_metrics(self, key: str, epoch: int) -> dict[str, float]:
        return self._checked(key, epoch, lambda f, m: _json_bytes(verified_bytes(f, METRICS, m), f / METRICS))

    def load_adapter(self, key: str, epoch: int) -> dict[str, Any]:
        return self._checked(key, epoch, lambda f, m: _safetensors_bytes(verified_bytes(f, ADAPTER, m), f / ADAPTER))

    def load_speaker_embedding(self, key: str, epoch: int) -> Any:
        return self._checked(key, epoch, lambda f, m: _speaker(verified_bytes(f, SPEAKER, m), f / SPEAKER))

    def load_epoch(self, key: str, epoch: int, trainer_state: bool = True) -> Checkpoint:
        """Every file of an epoch, verified; `trainer_state=False` skips the optimizer state (synthesis)."""

        def read(folder: Path, manifest: dict) -> Checkpoint:
            def get(name: str) -> bytes:
                return verified_bytes(folder, name, manifest)

            return Checkpoint(
                adapter=_safetensors_bytes(get(ADAPTER), folder / ADAPTER),
                speaker_embedding=_speaker(get(SPEAKER), folder / SPEAKER),
                metrics=_json_bytes(get(METRICS), folder / METRICS),
                config_yaml=get(CONFIG).decode("utf-8", errors="replace"),
                trainer_state=self._read_state(folder, get) if trainer_state else None,
            )

        return self._checked(key, epoch, read)

    @staticmethod
    def _read_state(folder: Path, get: Any) -> TrainerState:
        tensors = _safetensors_bytes(get(STATE_TENSORS), folder / STATE_TENSORS)
        body = _json_bytes(get(STATE_JSON), folder / STATE_JSON)
        try:
            state = {k: _decode(body[k], tensors) for k in ("optimizer", "scheduler", "rng")}
            if not {"state", "param_groups"} <= set(state["optimizer"]):
                raise ValueError("the optimizer state has no `state` / `param_groups`")
            return TrainerState(state["optimizer"], state["scheduler"], state["rng"], int(body["epoch"]))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CorruptEntry(folder / STATE_JSON, f"does not hold a trainer state ({exc!r})") from exc
