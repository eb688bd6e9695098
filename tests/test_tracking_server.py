"""The MLflow server the project starts: loopback only, host-header protection on, no password on its command
line; and `qtts-sweep tracking-server`'s exposure warning."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from qtts_sweep.tracking.server import EXPOSED_WARNING, default_allowed_hosts


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on `port`."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    out.add(addr)
    return out


def status(url: str, host: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_server_is_loopback_only_and_checks_host_headers(mlflow_pg_server, pg_cluster):
    server, _ = mlflow_pg_server
    port = int(server.uri.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 and nothing else
    api = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"  # /health is exempt from the check
    assert status(api) == 200
    assert status(api, host=f"evil.example:{port}") in (400, 403)  # a DNS-rebinding page is refused
    with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
        assert pg_cluster.password.encode() not in f.read()  # the backend URI went through the environment
    # MLflow's job runner and its huey consumers (8 processes nothing here uses) are not started
    import psutil

    started = [" ".join(c.cmdline()) for c in psutil.Process(server.proc.pid).children(recursive=True)]
    assert started and not [c for c in started if "huey" in c or "_job_runner" in c], started


def test_exposed_server_names_its_hosts_and_warns():
    assert default_allowed_hosts("127.0.0.1", 5000) == "127.0.0.1:5000,localhost:5000"
    assert default_allowed_hosts("10.1.2.3", 5000) == "10.1.2.3:5000"
    assert "*" not in default_allowed_hosts("0.0.0.0", 5000)
    assert "no authentication" in EXPOSED_WARNING
