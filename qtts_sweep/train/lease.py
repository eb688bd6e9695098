"""Training leases: at most one worker trains a training key at a time, on one machine or across a cluster.

A lease is `lease.json` in the key's store folder, created with O_CREAT|O_EXCL (atomic on local filesystems and
NFSv3+), holding its owner (host, pid, a random token) and a heartbeat time the holder refreshes every `ttl / 4`
from a thread. A lease whose heartbeat is older than `ttl`, or whose owner is a dead process on this host, has
expired: the next worker renames it aside (only one rename can win) and takes a fresh one. A worker that needs an
epoch of a key someone else is training waits for that epoch to be saved and reuses it (it never trains the same
epoch in parallel: the GPU idles for at most the holder's remaining epochs, against a whole wasted training run),
and takes over from the last complete epoch if the holder dies. Before an epoch folder is renamed into place
the holder checks it still owns the lease, so two workers never write the same `epoch-<e>`.

Clocks: the heartbeat is compared with the reader's clock; across nodes keep clocks in sync (NTP) and `ttl` well
above any skew (the default 60 s is).

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


class LeaseLost(RuntimeError):
    """The lease expired while this worker held it (it stalled longer than the ttl): stop, write nothing."""


class TrainingLease:
    """The exclusive right to train one training key (its store folder `key_dir`)."""

    def __init__(self, key_dir: str | os.PathLike, ttl: float = LEASE_TTL_S) -> None:
        self.path = Path(key_dir) / LEASE_FILE
        self.ttl = ttl
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "heartbeat": time.time()}

    def holder(self) -> dict | None:
        """The current lease record, or None when there is none (or it cannot be read yet)."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def expired(self, rec: dict) -> bool:
        if time.time() - float(rec.get("heartbeat", 0)) > self.ttl:
            return True
        return rec.get("host") == socket.gethostname() and not pid_alive(int(rec.get("pid", -1)))

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; start the heartbeat. False when someone else holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                rec = self.holder()
                if rec is None or not self.expired(rec):
                    return False  # held (or being written this instant)
                try:  # break the expired lease; of several breakers only one rename succeeds
                    os.replace(self.path, self.path.with_name(f"{LEASE_FILE}.expired-{self.token}"))
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
            self._start_heartbeat()
            return True
        return False

    def held(self) -> bool:
        rec = self.holder()
        return rec is not None and rec.get("token") == self.token

    def check(self) -> None:
        """Raise LeaseLost unless this worker still holds the lease (call before writing an epoch into place)."""
        if not self.held():
            raise LeaseLost(f"lost the training lease {self.path} (stalled longer than {self.ttl:.0f} s?)")

    def _beat(self) -> None:
        if self.held():
            tmp = self.path.with_name(f".{LEASE_FILE}.{self.token}.tmp")
            tmp.write_text(json.dumps(self._record()))
            os.replace(tmp, self.path)

    def _start_heartbeat(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.ttl / 4):
                try:
                    self._beat()
                except OSError:
                    pass

        self._thread = threading.Thread(target=run, daemon=True, name="lease-heartbeat")
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            self.path.unlink(missing_ok=True)
