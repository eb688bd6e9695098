"""Training leases: at most one worker trains a training key at a time, on one machine or across a cluster.

A lease is the marker file `lease.json` in the key's store folder, created with O_CREAT|O_EXCL (atomic on local
filesystems and NFSv3+), holding its owner (host, pid, a random token) and a beat counter. The holder keeps the
marker's file descriptor open for as long as it holds the lease and refreshes it every `ttl / 4` from a thread by
rewriting *its own inode* through that descriptor, never by path: a holder that lost its lease can only ever
touch its own, already displaced, file. The descriptor also pins the inode number, so "the marker at the path is
still my inode" is an exact ownership test (`held`, `check`).

Expiry is observed, not computed from timestamps: a contender takes over a marker whose (inode, content) it has
seen unchanged for `ttl` on its own monotonic clock (no clock sync between nodes needed), or at once when the
marker names a dead process on this host. Empty, torn or unreadable markers (a holder killed between create and
write, a full disk, ESTALE on NFS) expire the same way: nothing they contain is trusted.

Taking over and releasing are compare-and-swap on the marker: rename the path aside to a name unique to this
worker (of several renames of one inode only one succeeds), then check that the inode now aside is the one
judged expired (or, for a release, our own). If it is not -- another worker broke the old marker and created a
fresh one in between -- it is put back with `link` (which never overwrites) and this worker backs off. So a fresh
lease is never broken by a second breaker, and a release never removes a lease someone else took over.

A worker that needs an epoch of a key someone else is training waits for that epoch to be saved and reuses it
(it never trains the same epoch in parallel), and takes over from the last complete epoch if the holder dies.
Before an epoch folder is renamed into place the holder checks it still owns the lease, and the store refuses to
replace a complete epoch (store.py), so a worker that lost its lease writes nothing anyone reads.

Why not filelock's `SoftFileLease` (filelock 4.3, in the venv): it has the same inode pinning and observed expiry,
but it treats an empty marker as a pre-3.22 filelock holder and never breaks it (the key stays blocked forever:
issue 18 item 3), and it has no public "am I still the holder right now" check to run before a commit (a lost
claim is noticed only by its heartbeat thread or at release).

NFS: attribute caching can delay what a contender sees; the contender reads the marker's content (close-to-open
consistency), and the holder fsyncs each beat. Keep `ttl` (default 60 s) well above the mount's `acregmax`.

Owns: the lock file protocol. Does not own: what is trained (loop.py) or where epochs are stored (store.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from qtts_sweep.util.procs import pid_alive

LEASE_FILE = "lease.json"
LEASE_TTL_S = float(os.environ.get("QTTS_LEASE_TTL_S", "60"))  # tests shorten it to see expiry quickly
PUT_BACK_WAIT_S = 0.5  # how long `check` waits for a marker a contender briefly holds aside (see _take)


class LeaseLost(RuntimeError):
    """This worker no longer holds the lease (it stalled longer than the ttl and another worker took over):
    stop and write nothing. The trial is re-queued once (the driver), not counted as a failure."""


def _read(path: Path) -> tuple[int, bytes] | None:
    """(inode, content) of the marker, None when there is none. An unreadable one reads as empty content."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            return os.stat(path).st_ino, b""
        except OSError:
            return -1, b""  # cannot even stat (ESTALE): judged like an empty marker that never changes
    try:
        ino = os.fstat(fd).st_ino
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return ino, b"".join(chunks)
    except OSError:
        return ino, b""
    finally:
        os.close(fd)


def _parse(content: bytes) -> dict | None:
    try:
        rec = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


class TrainingLease:
    """The exclusive right to train one training key (its store folder `key_dir`)."""

    def __init__(self, key_dir: str | os.PathLike, ttl: float = LEASE_TTL_S) -> None:
        self.path = Path(key_dir) / LEASE_FILE
        self.ttl = ttl
        self.token = secrets.token_hex(8)
        self._fd: int | None = None
        self._ino: int | None = None
        self._beats = 0
        self._seen: tuple[tuple[int, bytes], float] | None = None  # marker last observed, and since when
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- reading the marker ----

    def holder(self) -> dict | None:
        """The current lease record, or None when there is none or it cannot be parsed."""
        seen = _read(self.path)
        return None if seen is None else _parse(seen[1])

    def _expired(self, seen: tuple[int, bytes]) -> bool:
        """Whether the marker `seen` may be taken over: a dead owner on this host, or unchanged for `ttl` in this
        worker's own observation (every call observes; a caller polls)."""
        rec = _parse(seen[1])
        if rec and rec.get("host") == socket.gethostname():
            try:
                if not pid_alive(int(rec.get("pid", -1))):
                    return True
            except (TypeError, ValueError):
                pass
        now = time.monotonic()
        if self._seen is None or self._seen[0] != seen:
            self._seen = (seen, now)
            return False
        return now - self._seen[1] >= self.ttl

    def vacant(self) -> bool:
        """No marker, or one that has expired (a waiting worker polls this to know when to try again)."""
        seen = _read(self.path)
        return seen is None or self._expired(seen)

    # ---- acquiring, holding, releasing ----

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; start the heartbeat. False when someone else holds it."""
        if self._fd is not None:
            return self.held()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                seen = _read(self.path)
                if seen is not None and not (self._expired(seen) and self._take(seen[0], seen[1])):
                    return False  # held (or a contender was faster)
                continue
            self._fd, self._ino = fd, os.fstat(fd).st_ino
            self._write_record()
            self._start_heartbeat()
            return True
        return False

    def _take(self, ino: int, content: bytes | None) -> bool:
        """Compare-and-swap removal of the marker: True when the marker removed is inode `ino` (with `content`,
        unless None); otherwise it is put back untouched and False is returned."""
        aside = self.path.with_name(f"{LEASE_FILE}.take-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # already gone: free to create
        except OSError:
            return False
        taken = _read(aside)
        if taken is not None and taken[0] == ino and (content is None or taken[1] == content):
            os.unlink(aside)
            return True
        try:  # not the marker judged: put it back; `link` never overwrites a marker created meanwhile
            os.link(aside, self.path)
        except OSError:
            pass  # someone created a new marker meanwhile: the displaced holder finds out at its next check
        os.unlink(aside)
        return False

    def held(self) -> bool:
        """Whether the marker at the path is still this worker's inode."""
        if self._fd is None:
            return False
        seen = _read(self.path)
        return seen is not None and seen[0] == self._ino

    def check(self) -> None:
        """Raise LeaseLost unless this worker still holds the lease (call before writing an epoch into place).

        A contender comparing markers holds ours aside for an instant before putting it back: wait that out."""
        deadline = time.monotonic() + PUT_BACK_WAIT_S
        while not self.held():
            if self._fd is None or time.monotonic() > deadline:
                raise LeaseLost(f"lost the training lease {self.path} (stalled longer than {self.ttl:.0f} s?)")
            time.sleep(0.05)

    def _write_record(self) -> None:
        """Rewrite this worker's marker through its own descriptor (never by path), then fsync (NFS)."""
        self._beats += 1
        rec = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "beat": self._beats}
        body = json.dumps(rec).encode()
        os.pwrite(self._fd, body, 0)
        os.ftruncate(self._fd, len(body))
        os.fsync(self._fd)

    def _beat(self) -> None:
        if self._fd is not None:
            self._write_record()

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def run(stop: threading.Event) -> None:
            while not stop.wait(self.ttl / 4):
                try:
                    self._beat()
                except OSError:
                    pass

        self._thread = threading.Thread(target=run, args=(self._stop,), daemon=True, name="lease-heartbeat")
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the marker if it is still ours (compare-and-swap, see `_take`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._fd is None:
            return
        try:
            if self.held():
                self._take(self._ino, None)
        finally:
            os.close(self._fd)
            self._fd = self._ino = None
