"""Whether a process on this host still runs (the stale-trial and training-lease checks ask)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (killed, not yet reaped by its parent) counts as dead: it will never run
    again, and a parent that waits on another child first can leave one for a long time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # field 3, after the parenthesised command name, is the state
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill(0)
