"""Atomic writes: build a folder or file under a temporary name beside its target, then rename it into place.

A reader never sees a half-written checkpoint, evaluation, bundle, model folder or cache entry under its final
name, nor a moment with no folder there; a failure leaves the previous complete one (if any) untouched and removes
the temporary one; two writers of one folder never fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(final: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `final`.

    Atomic: a reader sees the old complete folder or the new one, never none (an existing `final` is swapped out
    with one `renameat2(RENAME_EXCHANGE)` where the OS and filesystem offer it; elsewhere it is renamed aside
    first, a window of two renames). Two writers of one `final` never fail: with `replace` (default) the last to
    finish wins; with `replace=False` (a content-addressed cache entry, where both wrote the same thing) the
    first one stays and the later writer's folder is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        install_folder(tmp, final, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the OS or filesystem cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    if err == errno.ENOENT and not b.exists():
        return False  # `final` went away meanwhile: the caller's plain rename applies
    raise OSError(err, os.strerror(err), str(b))


def install_folder(tmp: Path, final: Path, replace: bool = True) -> None:
    """Move the complete folder `tmp` to `final` (see `atomic_folder`); `tmp` is gone or holds a stale copy after."""
    for _ in range(100):  # each turn loses at most one race against another writer
        try:
            os.rename(tmp, final)  # atomic; refuses a non-empty existing folder
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if not replace:
            if final.exists():
                return  # the other writer's equal entry stands; ours is removed by the caller
            continue
        if _exchange(tmp, final):
            return  # `tmp` now holds the old folder, removed by the caller
        aside = final.with_name(f"{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            continue  # another writer moved it first: try again
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # another writer installed its folder in the window: keep theirs (the last one wins either way)
        shutil.rmtree(aside, ignore_errors=True)
        return
    raise OSError(errno.EBUSY, f"could not install {final}: other writers kept replacing it")


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it replaces `final`, on failure it is removed.

    The temporary name keeps `final`'s suffix (np.save appends `.npy` otherwise; soundfile infers the format)
    and carries the pid, so two processes writing the same cache entry never share a temporary file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
