"""The package's logging: one stdlib logger per module (`log = get_logger(__name__)`), all under `qtts_sweep`.

Like Optuna's library root logger: the `qtts_sweep` logger gets one handler on first use (not at import), does
not propagate to the application's root logger, and prints one line per message to whatever `sys.stderr` is at
that moment (a test's capture, a redirected stream) as `warning: ...`, `note: ...` (INFO) or `error: ...`. Quiet
by default means: our own warnings and notes show, library chatter does not (util/quiet.py); `-v` adds DEBUG.

Owns: the handler, its format and level. Does not own: which library channels are silenced (quiet.py).
"""

from __future__ import annotations

import logging
import sys

ROOT = "qtts_sweep"
PREFIX = {logging.DEBUG: "debug", logging.INFO: "note", logging.WARNING: "warning", logging.ERROR: "error"}


class _CurrentStderr(logging.StreamHandler):
    """A StreamHandler bound to the current `sys.stderr`, looked up at every message."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{PREFIX.get(record.levelno, record.levelname.lower())}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass `__name__`), with the package's handler in place."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_Lines())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name)


def set_verbose(flag: bool) -> None:
    """-v: DEBUG messages too."""
    get_logger(ROOT).setLevel(logging.DEBUG if flag else logging.INFO)
