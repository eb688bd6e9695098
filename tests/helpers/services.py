"""Real services for the tests: a throwaway PostgreSQL cluster and an `mlflow server` on top of it.

The cluster lives in a temp folder, listens on 127.0.0.1 and a Unix socket in that folder, and is started and
stopped by a session fixture (one per test session: initdb costs seconds). PostgreSQL refuses to run as root,
so as root the server runs as the `postgres` user that Debian's package creates. Local (socket) connections are
`trust` for the admin; TCP connections need a password (scram-sha-256), so the role `qtts` really needs
`PASSWORD` and a test can grep for it afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROLE = "qtts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """Debian installs the server binaries outside PATH (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    """A PostgreSQL cluster in `root` on 127.0.0.1:`port`, with role `qtts` (password `password`)."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root, self.bindir = root, bindir
        self.data, self.sock = root / "data", root / "sock"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)  # unique: a grep for it finds only leaks
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            pw = pwd.getpwnam("postgres")
            for d in (root, self.sock):
                d.mkdir(exist_ok=True)
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self.sock.mkdir(exist_ok=True)

    def _run(self, *argv: str) -> None:
        out = subprocess.run([*self._as, *argv], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions",
        )  # fmt: skip
        self.start()
        self.sql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.sock} -c max_connections=100 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", opts, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stops (dropping every client connection) and starts again on the same port."""
        self.stop()
        self.start()

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host=str(self.sock), port=self.port, user="postgres", dbname=dbname) as conn:
            conn.autocommit = True
            conn.execute(statement)

    def dump(self, dbname: str) -> str:
        """The whole database as SQL text (every row of every table), for grepping."""
        argv = [str(self.bindir / "pg_dump"), "-h", str(self.sock), "-p", str(self.port), "-U", "postgres", dbname]
        out = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=True)
        return out.stdout

    def create_db(self, name: str) -> str:
        """A fresh database owned by `qtts`; returns its name."""
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def url(self, dbname: str, with_password: bool = False) -> str:
        auth = f"{ROLE}:{self.password}" if with_password else ROLE
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{dbname}"

    def pgpass(self, folder: Path) -> Path:
        """A ~/.pgpass-style file for the role (libpq reads it through PGPASSFILE); mode 0600 or libpq ignores it."""
        path = folder / "pgpass"
        path.write_text(f"127.0.0.1:{self.port}:*:{ROLE}:{self.password}\n")
        path.chmod(0o600)
        return path


def _skip_reason() -> str | None:
    if pg_bindir() is None:
        return "PostgreSQL server binaries not found (Debian package `postgresql`; scripts/system-deps.sh)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as (PostgreSQL refuses root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL cluster for the whole session (skips with the reason when the server is not installed)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(
        tempfile.mkdtemp(prefix="qtts-pg-")
    )  # not under pytest's tmp: that is 0700 root, the server cannot enter
    cluster = PgCluster(root, pg_bindir())
    cluster.init()
    try:
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def wait_http(url: str, proc: subprocess.Popen, log: Path | None = None, timeout_s: float = 90) -> None:
    """Until `url` answers; fails at once if `proc` exits (with the tail of its `log`, when it writes one)."""

    def tail() -> str:
        return f":\n{log.read_text()[-3000:]}" if log is not None else ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}{tail()}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s{tail()}")


@pytest.fixture(scope="session")
def mlflow_pg_server(pg_cluster, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its backend store in the session's PostgreSQL (the URI carries the
    password, the worst case for leaks); clients log over HTTP. Yields (handle, artifact root)."""
    from qtts_sweep.tracking.server import start_mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    backend = pg_cluster.url(pg_cluster.create_db("mlflow"), with_password=True)
    handle = start_mlflow_server(backend, root / "artifacts", timeout=240)
    try:
        yield handle, root
    finally:
        handle.stop()
