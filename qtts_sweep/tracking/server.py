"""An `mlflow server` process for many writers: workers log over HTTP instead of sharing one SQLite file.

Owns starting and stopping the server, bound to loopback unless asked otherwise, with MLflow's host-header
protection (`--allowed-hosts`) naming exactly the address it serves, and `qtts-sweep tracking-server`. The backend
store URI reaches the server through MLflow's own environment variable, not its command line, so a password in it
is not visible in `ps`; better still, keep passwords out of URIs (PostgreSQL: ~/.pgpass or PGPASSFILE). Does not own
what is logged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from qtts_sweep.util.log import get_logger
from qtts_sweep.util.urls import redact

log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


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


def default_allowed_hosts(host: str, port: int) -> str:
    """The Host headers the server accepts: the address it is reached at, nothing else (DNS-rebinding guard)."""
    if host == LOOPBACK:
        return f"{host}:{port},localhost:{port}"
    if host in ("0.0.0.0", "::"):  # every interface: the names other machines use for this one
        names = {socket.gethostname(), socket.getfqdn()}
        try:
            names.add(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        return ",".join(sorted(f"{n}:{port}" for n in names if n))
    return f"{host}:{port}"


def start_mlflow_server(
    backend_uri: str,
    artifact_root: str | Path,
    host: str = LOOPBACK,
    port: int = 0,
    timeout: float = 120.0,
    allowed_hosts: str | None = None,
    workers: int = 1,
) -> ServerHandle:
    """Start `mlflow server` and wait until it answers; raise with its log tail if it does not."""
    port = port or free_port(host)
    log = Path(artifact_root).parent / f"mlflow-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    Path(artifact_root).mkdir(parents=True, exist_ok=True)
    allowed = allowed_hosts or default_allowed_hosts(host, port)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--default-artifact-root", Path(artifact_root).resolve().as_uri(), "--host", host, "--port", str(port),
        "--allowed-hosts", allowed, "--workers", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_uri}
    # MLflow 3's job execution (GenAI jobs: prompt optimisation, trace roll-ups) starts a job runner and seven huey
    # consumer processes beside the server; nothing here submits jobs. Off unless the caller's environment turns it
    # on: the server starts in ~9 s instead of ~14 s on 2 cores and stops in 1 s instead of 5.
    env.setdefault(JOB_EXECUTION_ENV, "false")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
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


EXPOSED_WARNING = (
    "the MLflow server listens on {host}:{port}, beyond this machine. MLflow has no authentication by "
    "default: anyone who can reach that address can read, change and delete every run, metric, artifact and "
    "registered model. Keep it on a trusted network or behind an authenticating reverse proxy (or MLflow's "
    "basic-auth app); clients then pass MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."
)


def serve(
    backend_uri: str,
    artifact_root: str | Path,
    host: str = LOOPBACK,
    port: int = 5000,
    allowed_hosts: str | None = None,
    workers: int = 1,
) -> int:
    """`qtts-sweep tracking-server`: run the server in the foreground, print the override that points a sweep at
    it, stop it on Ctrl-C or SIGTERM (it runs in its own session, so it must be stopped explicitly)."""
    import signal

    if host != LOOPBACK:
        log.warning(EXPOSED_WARNING.format(host=host, port=port))
    handle = start_mlflow_server(backend_uri, artifact_root, host, port, allowed_hosts=allowed_hosts, workers=workers)
    signal.signal(signal.SIGTERM, _interrupt)
    reach = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    print(
        f"MLflow server on {handle.uri} (backend {redact(backend_uri)}, artifacts {Path(artifact_root).resolve()})\n"
        f"  log:   {handle.log}\n"
        f"  use:   tracking.tracking_uri=http://{reach}:{port}\n"
        "  stop:  Ctrl-C",
        flush=True,
    )
    try:
        return handle.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        handle.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
