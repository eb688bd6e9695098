"""Credentials out of URLs before they are printed, logged or written anywhere."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host; the user name stays (it says whose study it is).
_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (text without URLs is returned as is)."""
    return _PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
