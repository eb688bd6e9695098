"""A password in the study's storage URL, in `tracking.tracking_uri` and in the MLflow server's backend URI never
lands anywhere the project writes: console output, runs/ (Hydra's .hydra/ files, reports, logs, every checkpoint's
config.yaml, the job files submitit pickles under runs/slurm/), the MLflow store (params, tags, artifacts, the
server log) or the Optuna study itself. Run once with local drivers (`--workers 2`) and once as a submitit job
array (its local executor)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.sweeps import CHEAP, PROJECT_DIR, tiny_paths, two_trial_sweep

pytestmark = pytest.mark.slow


def files_containing(root, needle: str) -> list[str]:
    data = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.mark.parametrize("launcher", ["local", "submitit"])
def test_password_never_written(pg_cluster, mlflow_pg_server, tmp_path, tiny_model_dir, launcher):
    server, server_root = mlflow_pg_server
    secret = pg_cluster.password
    db = pg_cluster.create_db(f"secret_study_{launcher}")
    storage = pg_cluster.url(db, with_password=True)
    runs = tmp_path / "runs"
    # the server ignores the credentials; the client sends them (HTTP basic auth) and must never write them
    tracking = server.uri.replace("http://", f"http://qtts:{secret}@", 1)
    jobs = ["launcher=slurm", "launcher.cluster=local", "launcher.cpus=1"] if launcher == "submitit" else []
    cmd = [
        sys.executable, "-m", "qtts_sweep.cli", "sweep", str(two_trial_sweep(tmp_path)), "--workers", "2",
        "--storage", storage, *CHEAP, *tiny_paths(runs, tiny_model_dir),
        f"tracking.tracking_uri={tracking}", *jobs,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_DIR, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert secret not in out.stdout + out.stderr
    # the sweep ran and wrote what we grep (report, evals, store; the qtts sweeper runs no Hydra job, so Hydra
    # saves no .hydra/ folder: any it did save would be under runs/ and grepped too)
    assert any((runs / "sweeps" / "tiny" / "report").iterdir()) and any((runs / "store").iterdir())
    configs = list((runs / "store").rglob("config.yaml"))
    assert configs and all(f"qtts:***@{server.uri[len('http://') :]}" in p.read_text() for p in configs)
    if launcher == "submitit":
        assert list((runs / "slurm").rglob("*.pkl"))  # the pickles submitit wrote (and its jobs read back)
    assert files_containing(runs, secret) == []
    assert files_containing(server_root, secret) == []  # artifacts + the server's own log
    mlflow_rows, study_rows = pg_cluster.dump("mlflow"), pg_cluster.dump(db)
    assert "qtts:***@" in mlflow_rows  # the parent run's storage param, redacted
    assert secret not in mlflow_rows and secret not in study_rows
    assert "COMPLETE" in study_rows
