"""Integrity of stored folders: a sha256 manifest written last at save time, checked at load; corrupt folders are
moved aside, never deleted; files get the user's umask minus write access for others.

One mechanism for every folder the package both writes and later trusts (checkpoint epochs, cached evaluations):
`write_manifest` lists each file's sha256 and size in `manifest.json`, `verified_bytes` reads a file once and
checks it against that list, `move_aside` renames a folder that failed to `<name>.corrupt-<UTC timestamp>` so the
caller can recompute it and a person can still inspect what went wrong.

Not here: what the files mean or how they are parsed (the store and the evaluation cache own that).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class CorruptEntry(RuntimeError):
    """A stored file is missing, truncated, altered or unparseable. `path` names it; `moved_to` is where its
    folder went (None when it was left in place)."""

    def __init__(self, path: Path, reason: str, moved_to: Path | None = None):
        self.path, self.reason, self.moved_to = Path(path), reason, moved_to
        where = f"; its folder was moved aside to {moved_to}" if moved_to else ""
        super().__init__(f"{path}: {reason}{where}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(folder: Path, extra: dict | None = None) -> None:
    """Record sha256 and size of every file under `folder` (recursively) in `folder/manifest.json`.

    Written after the files and before the folder is renamed into place, so a manifest always describes a
    complete folder.
    """
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        data = path.read_bytes()
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    body = {"format": MANIFEST_FORMAT, "files": files, **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict[str, dict]:
    """{relative name: {"sha256", "bytes"}} of a folder; CorruptEntry when the manifest is missing or unreadable."""
    path = folder / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        files = body["files"]
        if not isinstance(files, dict) or not all(isinstance(v.get("sha256"), str) for v in files.values()):
            raise ValueError("`files` is not a {name: {sha256, bytes}} table")
    except FileNotFoundError as exc:
        raise CorruptEntry(path, "manifest is missing (folder written by an older version or by hand)") from exc
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CorruptEntry(path, f"manifest is unreadable ({exc})") from exc
    return files


def verified_bytes(folder: Path, name: str, manifest: dict[str, dict] | None = None) -> bytes:
    """The bytes of `folder/name`, read once and checked against the folder's manifest."""
    manifest = read_manifest(folder) if manifest is None else manifest
    path = folder / name
    if name not in manifest:
        raise CorruptEntry(path, "is not listed in the folder's manifest")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptEntry(path, f"cannot be read ({exc.strerror or exc})") from exc
    want = manifest[name]
    if len(data) != want.get("bytes", len(data)):
        raise CorruptEntry(path, f"has {len(data)} bytes, the manifest recorded {want['bytes']} (truncated?)")
    if sha256_bytes(data) != want["sha256"]:
        raise CorruptEntry(path, "sha256 differs from the one recorded at save time (altered or damaged)")
    return data


def verify_folder(folder: Path) -> None:
    """Check every file the manifest lists (CorruptEntry on the first that fails)."""
    manifest = read_manifest(folder)
    for name in manifest:
        verified_bytes(folder, name, manifest)


def move_aside(folder: Path) -> Path:
    """Rename a failed folder to `<name>.corrupt-<UTC timestamp>` beside it (kept for inspection, never deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder.with_name(f"{folder.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.corrupt-{stamp}-{n}")
    os.replace(folder, target)
    return target


def quarantine(exc: CorruptEntry, folder: Path) -> CorruptEntry:
    """Move `folder` aside (if still there) and return the error with where it went, for the caller to report."""
    moved = move_aside(folder) if folder.exists() else None
    return CorruptEntry(exc.path, exc.reason, moved)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc); else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_modes(folder: Path) -> None:
    """Give `folder` and everything in it the modes a plain `open`/`mkdir` would (umask respected) but never
    writable by others: temporary folders start as 0700 and a permissive umask (0000) must not make a shared store
    writable by everyone."""
    mask = current_umask() | stat.S_IWOTH
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


_warned: set[str] = set()


def warn_if_others_can_write(folder: Path) -> None:
    """Warn once per folder and process when users other than the owner may write into `folder`."""
    key = str(folder)
    if key in _warned or not folder.is_dir():
        return
    mode = folder.stat().st_mode
    if mode & stat.S_IWOTH:
        _warned.add(key)
        log.warning(
            f"{folder} is writable by every user (mode {stat.filemode(mode)}): anyone on this machine can "
            f"replace what is loaded from it. Fix: chmod o-w {folder}"
        )
