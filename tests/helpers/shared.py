"""Values computed once per test session and shared by every `make test` process (pytest-xdist runs whole files
per process, so a module fixture is per file: two files that score the same clips would each pay for it).

`memo(key, compute)` keeps a pickle under the session's shared folder (`SHARED_ENV`, set by tests/conftest.py to
a folder all xdist processes of one run see), one file lock per key: the first process to ask computes, a later
one reads, and two processes walking the same keys split the work between them. Outside a test session (the
env unset: scripts/calibrate_metrics.py run by hand) it just computes. Only deterministic values belong here:
the same key must mean the same inputs (each caller's key names them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SHARED_ENV = "QTTS_TEST_SHARED_DIR"


def memo(key: str, compute: Callable[[], T]) -> T:
    root = os.environ.get(SHARED_ENV)
    if not root:
        return compute()
    from filelock import FileLock

    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".pkl")
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return pickle.loads(path.read_bytes())
        value = compute()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(value))
        tmp.replace(path)
        return value
