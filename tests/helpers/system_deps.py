"""Tests that need a system package fail with the fix when it is missing: `make test` installs them first.

A skip here would hide exactly the tests that prove the metrics on real speech; after `make system-deps`
(scripts/system-deps.sh, the one list) a missing package is a broken set-up, not an optional extra.
"""

from __future__ import annotations

import shutil

import pytest

FIX = "run `make system-deps` (or `bash scripts/system-deps.sh`; as root it installs them)"


def require_commands(*commands: str) -> None:
    """Fail the calling test, naming every missing command and the fix, unless all are on PATH."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.fail(f"system command(s) not installed: {', '.join(missing)}; fix: {FIX}", pytrace=False)


def require_sources(missing: list[str]) -> None:
    """Fail the calling test with the list of missing data sources (from tests/helpers/speech_clips.py) and the fix."""
    if missing:
        pytest.fail("speech clip sources not installed: " + "; ".join(missing) + f"; fix: {FIX}", pytrace=False)
