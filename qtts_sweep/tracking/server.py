"""An `mlflow server` process for many writers: workers log over HTTP instead of sharing one SQLite file.

Owns starting and stopping the server, bound to loopback unless asked otherwise, with MLflow's host-header
protection (`--allowed-hosts`) naming exactly the address it serves. Does not own what is logged.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from qtts_sweep.util.urls import redact

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    uri: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_mlflow_server(
    backend_uri: str, artifact_root: str | Path, host: str = LOOPBACK, port: int = 0, timeout: float = 120.0
) -> ServerHandle:
    """Start `mlflow server` and wait until it answers; raise with its log tail if it does not."""
    port = port or free_port(host)
    log = Path(artifact_root).parent / f"mlflow-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    Path(artifact_root).mkdir(parents=True, exist_ok=True)
    allowed = f"{host}:{port},localhost:{port}" if host == LOOPBACK else f"{host}:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
        "--default-artifact-root", Path(artifact_root).resolve().as_uri(), "--host", host, "--port", str(port),
        "--allowed-hosts", allowed, "--workers", "1",
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://{host}:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return ServerHandle(proc, uri, log)
        except OSError:
            time.sleep(0.5)
    handle = ServerHandle(proc, uri, log)
    handle.stop()
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
    raise RuntimeError(f"mlflow server ({redact(backend_uri)}) did not start on {uri}:\n{redact(tail)}")
