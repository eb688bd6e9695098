"""`qtts-sweep gc`: remove stored checkpoints that no top trial and no promotion needs; print what it freed.

Kept: the checkpoint of each study's top-K completed trials (the whole Pareto front of a multi-objective study;
every study in the Optuna storage), of every
promoted bundle (its origin training key + epoch), and every key a RUNNING trial may be writing to.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from qtts_sweep.config.schema import Config
from qtts_sweep.train.store import CheckpointRef, CheckpointStore


@dataclass
class GcResult:
    removed: list[Path]
    kept: list[Path]
    freed_bytes: int


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def protected(cfg: Config, storages: list[str], keep_top: int) -> tuple[set[Path], set[str]]:
    """(epoch folders to keep, training keys to keep whole)."""
    import optuna
    import yaml

    from qtts_sweep.sweep.result import StoredTrial
    from qtts_sweep.sweep.selection import kept_trials
    from qtts_sweep.sweep.storage import load_existing_study, make_storage

    store = Path(cfg.paths.store_dir)
    keep: set[Path] = set()
    busy: set[str] = set()
    studies = [(s.study_name, url) for url in storages for s in optuna.get_all_study_summaries(make_storage(url))]
    for name, url in studies:
        study = load_existing_study(name, url)
        for stored in map(StoredTrial.of, kept_trials(study, keep_top)):
            if stored.checkpoint is not None:
                keep.add(stored.checkpoint.path.resolve())
        for stored in map(StoredTrial.of, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))):
            if stored.training_key:
                busy.add(stored.training_key)
            busy.add("*")  # a running trial's key is unknown until it reports: keep everything of unknown keys
    for bundle in Path(cfg.paths.production_dir).glob("*/production.yaml"):
        origin = (yaml.safe_load(bundle.read_text()) or {}).get("origin", {})
        if origin.get("training_key") and origin.get("epoch"):
            keep.add(CheckpointRef(store, origin["training_key"], int(origin["epoch"])).path.resolve())
    return keep, busy


def _epoch_dirs(store: Path) -> list[Path]:
    """Stored epoch folders; folders moved aside as corrupt are left for a person to look at."""
    return [ref.path for ref in CheckpointStore(store).stored()]


def collect_garbage(cfg: Config, storages: list[str] | str, keep_top: int = 3, dry_run: bool = False) -> GcResult:
    keep, busy = protected(cfg, [storages] if isinstance(storages, str) else storages, keep_top)
    removed, kept, freed = [], [], 0
    store = Path(cfg.paths.store_dir)
    if "*" in busy:
        return GcResult([], _epoch_dirs(store), 0)  # a sweep is running: touch nothing
    for epoch_dir in _epoch_dirs(store):
        if epoch_dir.resolve() in keep or epoch_dir.parent.name in busy:
            kept.append(epoch_dir)
            continue
        freed += _size(epoch_dir)
        removed.append(epoch_dir)
        if not dry_run:
            shutil.rmtree(epoch_dir)
    return GcResult(removed, kept, freed)


def format_gc(r: GcResult, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {len(r.removed)} checkpoint(s), {r.freed_bytes / 2**20:.1f} MiB; kept {len(r.kept)}"]
    lines += [f"  - {p}" for p in r.removed[:50]]
    return "\n".join(lines)
