"""The production bundle: one type, written by `Bundle.save` and read back by `Bundle.load`.

A bundle folder holds `production.yaml`, `adapter.safetensors` and `speaker_embedding.safetensors`: no paths into
`runs/store`, movable to another machine. `production.yaml` records everything synthesis needs to sound exactly
like the trial did (base model + content hash, LoRA r/alpha/targets, scale, decoding, seed, batch size), where it
came from (study, trial, MLflow run) and its val / test metrics, plus the sha256 of the two tensor files.

Owns: the file format (both directions), validation on load (every problem at once, before any model loads),
atomic writes. Does not own: choosing the trial (qtts_sweep.sweep.selection), scoring, registering.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import DecodingConfig, LoraConfig
from qtts_sweep.util.fsio import atomic_folder, write_text_atomic
from qtts_sweep.util.problems import Problem, ValidationError

BUNDLE_FILE = "production.yaml"
BUNDLE_VERSION = 1
SPEAKER_NAME = "target"
TENSOR_FILES = ("adapter.safetensors", "speaker_embedding.safetensors")
REWRITE = "re-run `qtts-sweep promote` to rewrite the bundle"


class BundleError(ValidationError):
    def __init__(self, problems: list[Problem], source: str = "production bundle"):
        super().__init__(problems, source)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Bundle:
    """A production bundle (`dir` is where it lives once saved or loaded)."""

    base_model: str
    base_model_identity: str
    base_tiny: bool
    lora: LoraConfig
    lora_scale: float
    batch_size: int
    decoding: DecodingConfig
    speaker: str = SPEAKER_NAME
    origin: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    dir: Path | None = None

    @property
    def adapter(self) -> Path:
        return self.dir / "adapter.safetensors"

    @property
    def speaker_embedding(self) -> Path:
        return self.dir / "speaker_embedding.safetensors"

    def to_dict(self, files: dict[str, str]) -> dict[str, Any]:
        """The `production.yaml` payload (`files`: sha256 of each tensor file)."""
        return {
            "version": BUNDLE_VERSION,
            "base_model": {"source": self.base_model, "identity": self.base_model_identity, "tiny": self.base_tiny},
            "lora": {
                "r": self.lora.r,
                "alpha": self.lora.alpha,
                "target_modules": list(self.lora.target_modules),
                "scope": self.lora.scope,
            },
            "lora_scale": float(self.lora_scale),
            "speaker": self.speaker,
            "batch_size": self.batch_size,
            "decoding": dataclasses.asdict(self.decoding),
            "origin": self.origin,
            "metrics": self.metrics,
            "files": files,
        }

    def save(self, folder: Path, checkpoint: Path) -> Bundle:
        """Write the bundle into `folder` atomically, copying the tensor files from an epoch folder."""
        import yaml

        with atomic_folder(folder) as tmp:
            for name in TENSOR_FILES:
                shutil.copy2(checkpoint / name, tmp / name)
            files = {n: sha256(tmp / n) for n in TENSOR_FILES}
            (tmp / BUNDLE_FILE).write_text(yaml.safe_dump(self.to_dict(files), sort_keys=False))
        return dataclasses.replace(self, dir=Path(folder))

    def update_origin(self, **entries: Any) -> None:
        """Add to `origin` in the saved `production.yaml` (atomically; the tensor files are untouched)."""
        import yaml

        self.origin.update(entries)
        path = self.dir / BUNDLE_FILE
        raw = yaml.safe_load(path.read_text()) or {}
        write_text_atomic(path, yaml.safe_dump(self.to_dict(raw.get("files", {})), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path, check_model: bool = True) -> Bundle:
        """Validate a bundle before any model loads: fields, files, base-model hash. Every problem at once."""
        import yaml

        p = Path(path)
        folder = p.parent if p.suffix in (".yaml", ".yml") else p
        f = folder / BUNDLE_FILE
        if not f.is_file():
            fix = "pass runs/production/<name>/ (or its production.yaml); `ls runs/production` lists the bundles"
            raise BundleError([Problem(str(f), None, "does not exist", fix)])
        raw = yaml.safe_load(f.read_text()) or {}
        fields, problems = _read_fields(raw, str(f))
        problems += _file_problems(folder, raw)
        if check_model and not problems:
            problems += _model_problems(fields, str(f))
        if problems:
            raise BundleError(problems)
        return cls(**fields, dir=folder)


_REQUIRED: dict[str, type | tuple] = {
    "base_model.source": str,
    "base_model.identity": str,
    "lora_scale": (int, float),
    "lora.r": int,
    "lora.alpha": (int, float),
    "lora.target_modules": list,
    "lora.scope": str,
    "decoding.seed": int,
    "batch_size": int,
}


def _get(raw: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _required(raw: dict, where: str) -> tuple[dict[str, Any], list[Problem]]:
    values, problems = {}, []
    for key, kind in _REQUIRED.items():
        v = _get(raw, key)
        numeric = kind in (int, float, (int, float))
        if v is None or not isinstance(v, kind) or (isinstance(v, bool) and numeric):
            rule = f"is required and must be {getattr(kind, '__name__', kind)}"
            problems.append(Problem(f"{where}: {key}", v, rule, REWRITE))
        values[key] = v
    return values, problems


def _read_fields(raw: dict, where: str) -> tuple[dict[str, Any], list[Problem]]:
    v, problems = _required(raw, where)
    if problems:
        return {}, problems
    try:
        lora = LoraConfig(
            r=v["lora.r"], alpha=float(v["lora.alpha"]), dropout=0.0, target_modules=v["lora.target_modules"],
            scope=v["lora.scope"],
        )  # fmt: skip
        decoding = DecodingConfig(**raw["decoding"])
    except (ValidationError, TypeError) as exc:
        return {}, getattr(exc, "problems", [Problem(where, raw.get("decoding"), str(exc), REWRITE)])
    if not 0 <= v["lora_scale"] <= 2:
        problems.append(Problem(f"{where}: lora_scale", v["lora_scale"], "must be in [0, 2]", "e.g. 0.3"))
    if v["batch_size"] < 1:
        problems.append(Problem(f"{where}: batch_size", v["batch_size"], "must be >= 1", "the trial's eval.batch_size"))
    fields = {
        "base_model": v["base_model.source"],
        "base_model_identity": v["base_model.identity"],
        "base_tiny": bool(_get(raw, "base_model.tiny")),
        "lora": lora,
        "lora_scale": float(v["lora_scale"]),
        "batch_size": v["batch_size"],
        "decoding": decoding,
        "speaker": raw.get("speaker", SPEAKER_NAME),
        "origin": raw.get("origin") or {},
        "metrics": raw.get("metrics") or {},
    }
    return fields, problems


def _file_problems(folder: Path, raw: dict) -> list[Problem]:
    problems = []
    recorded = raw.get("files") or {}
    for name in TENSOR_FILES:
        path = folder / name
        if not path.is_file():
            fix = "copy the whole bundle folder, or re-run `qtts-sweep promote`"
            problems.append(Problem(str(path), None, "is missing from the bundle", fix))
        elif recorded.get(name) and recorded[name] != sha256(path):
            fix = "the file was modified or replaced: re-run `qtts-sweep promote`"
            problems.append(Problem(str(path), None, "does not match the sha256 recorded in production.yaml", fix))
    return problems


def _model_problems(fields: dict[str, Any], where: str) -> list[Problem]:
    from qtts_sweep.train.store import model_identity

    base, ident = fields["base_model"], fields["base_model_identity"]
    if not Path(base).is_dir():
        return []
    actual = model_identity(base)
    if actual == ident:
        return []
    fix = "point base_model.source at the exact base model the adapter was trained on"
    return [Problem(f"{where}: base_model.identity", ident, f"the folder {base} now hashes to {actual}", fix)]


def resolve_bundle(tracking: Any, where: str, tmp: Path) -> Bundle:
    """A bundle from a folder / production.yaml path, or from the registry (`models:/<name>@production`)."""
    if where.startswith("models:/") or where.startswith("runs:/"):
        from qtts_sweep.tracking.registry import make_registry

        where = str(make_registry(tracking).download_bundle(where, tmp))
    return Bundle.load(where)
