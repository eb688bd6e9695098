"""sha256 of big files, remembered by (absolute path, size, mtime_ns) so an unchanged file is hashed once.

Per user (`$XDG_CACHE_HOME/qtts-sweep/sha256-digests.json`, default `~/.cache/...`) and per process: a weights
folder read every trial (the speech tokenizer's, for its identity) costs one stat per file after the first time.
Any rewrite of a file changes its mtime and so its entry. Not under runs/: a store shared with others must not be
able to plant a digest for your files. Not here: what the digest identifies (the callers own their keys).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_memo: dict[str, str] = {}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qtts-sweep" / "sha256-digests.json"


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or damaged: a cache, recomputed
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**24), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, cache_file: Path | None = None) -> str:
    """The sha256 of `path`'s content (hex), hashed only when its (path, size, mtime) is not known yet."""
    path = Path(path)
    st = path.stat()
    prefix = f"{path.resolve()}\0"
    entry = f"{prefix}{st.st_size}\0{st.st_mtime_ns}"
    if entry in _memo:
        return _memo[entry]
    cache_file = cache_file or cache_path()
    cache = _read(cache_file)
    if entry not in cache:
        for stale in [k for k in cache if k.startswith(prefix)]:  # an older version of the same file
            del cache[stale]
        cache[entry] = _sha256(path)
        from qtts_sweep.util.fsio import write_text_atomic

        try:
            write_text_atomic(cache_file, json.dumps(cache, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only home only costs the next process another hash
    _memo[entry] = cache[entry]
    return cache[entry]
