"""The per-line evaluation cache: a (checkpoint, scale) pair's scored lines, so adding lines extends a result.

Generation runs in fixed batches of `eval.batch_size` lines formed from the line order, and a batch's sampling
seed is a function of its lines (`synth.batch_seed`). A line's result therefore depends on the pair, the line, the
decoding seed index and the other lines of its batch, and that is the cache key of one entry:

    runs/evals/lines-<pair key>/<sha of the batch's (id, text) list>-s<seed index>/
        rows.json (one scored row per line of the batch), wavs/<id>_s<seed>.wav, manifest.json

Scoring the first 10 lines and then the first 20 (the multi-fidelity mode, qtts_sweep.sweep.fidelity) finds the
first 10 lines' batches here and synthesizes only the new ones; a prefix that ends inside a batch makes that
partial batch a different entry, which is why the fidelity schedule rounds chunk ends to whole batches. With
batch size 1 an entry is exactly (pair, line, seed). Each entry is written atomically with a sha256 manifest and
checked on read (qtts_sweep.util.integrity); a damaged one is moved aside and recomputed.

Owns: the entry layout, its key, reading and writing. Does not own: synthesis, metrics or aggregation
(scoring.py), the whole-result cache (scoring.py: `load_cached`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import EvalConfig
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

ROWS_FILE = "rows.json"


def pair_key(training_key: str, epoch: int | None, scale: float, ev: EvalConfig) -> str:
    """Key of a (checkpoint, scale) pair's per-line results: what changes a line's row, and nothing about which
    lines or how many (the objective's weights and the ceiling do not change a row: they are applied later)."""
    conf = dataclasses.asdict(ev)
    for k in ("epoch", "lora_scale", "max_lines", "objective"):
        conf.pop(k, None)
    blob = json.dumps(
        {"metrics": REGISTRY.digest(), "train": training_key, "epoch": epoch, "scale": round(scale, 6), "eval": conf},
        sort_keys=True,
    )
    return "lines-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def batch_name(lines: list[Any], seed_index: int) -> str:
    """Entry name of one generation batch (its lines' ids and texts, in order) at one decoding seed index."""
    blob = json.dumps([[ln.id, ln.text] for ln in lines])
    return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}-s{seed_index}"


class LineCache:
    """The per-line entries of one pair under `runs/evals/<pair key>/`."""

    def __init__(self, runs_dir: str, key: str) -> None:
        self.dir = Path(runs_dir) / "evals" / key

    def get(self, lines: list[Any], seed_index: int) -> tuple[list[dict], list[Any]] | None:
        """(rows, wavs) of a cached batch, or None (absent, or damaged: then moved aside and reported)."""

        import soundfile as sf

        from qtts_sweep.util.integrity import CorruptEntry, quarantine, verified_bytes, verify_folder

        d = self.dir / batch_name(lines, seed_index)
        if not d.is_dir():
            return None
        try:
            verify_folder(d)
            rows = json.loads(verified_bytes(d, ROWS_FILE).decode("utf-8"))
            if [r.get("id") for r in rows] != [ln.id for ln in lines]:
                raise CorruptEntry(d / ROWS_FILE, "does not hold the batch's lines")
            wavs = [sf.read(d / r["wav"], dtype="float32")[0] for r in rows]
        except (CorruptEntry, ValueError, KeyError, TypeError) as exc:
            err = exc if isinstance(exc, CorruptEntry) else CorruptEntry(d / ROWS_FILE, f"unreadable ({exc!r})")
            moved = quarantine(err, d)
            log.warning(f"cached line batch {moved}; it is recomputed. Fix: none needed")
            return None
        return rows, wavs

    def put(self, lines: list[Any], seed_index: int, rows: list[dict], wavs: list[Any]) -> None:
        """Store one batch's scored rows and wavs (atomically, with a manifest)."""
        import soundfile as sf

        from qtts_sweep.util.fsio import atomic_folder
        from qtts_sweep.util.integrity import apply_modes, write_manifest

        with atomic_folder(self.dir / batch_name(lines, seed_index)) as tmp:
            (tmp / "wavs").mkdir()
            for row, wav in zip(rows, wavs, strict=True):
                sf.write(tmp / row["wav"], wav, 24000, subtype="FLOAT")
            (tmp / ROWS_FILE).write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
            write_manifest(tmp)
            apply_modes(tmp)
