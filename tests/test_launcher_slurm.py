"""launcher=slurm: a job array of drivers on one study through submitit — its local executor here, and a real
single-node SLURM (munged + slurmctld + slurmd from Debian's packages) started by a fixture."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.config.schema import ConfigError
from qtts_sweep.sweep.slurm import check_services, make_executor
from qtts_sweep.util.problems import ValidationError
from tests.helpers.services import free_port
from tests.helpers.sweeps import CHEAP, tiny_paths, two_trial_sweep

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def study_states(storage_url: str, study: str = "tiny") -> list[str]:
    from qtts_sweep.sweep.storage import load_existing_study

    return sorted(t.state.name for t in load_existing_study(study, storage_url).get_trials())


def test_launcher_config_is_checked():
    cfg = load_config(["model=tiny", "launcher=slurm"])
    assert (cfg.launcher.kind, cfg.launcher.gres, cfg.launcher.cluster) == ("slurm", "gpu:1", "slurm")
    assert cfg.launcher.log_folder.startswith(cfg.paths.runs_dir)
    with pytest.raises(ConfigError) as err:
        load_config(["model=tiny", "launcher=slurm", "launcher.cpus=0", "launcher.time_min=1"])
    keys = sorted(p.key for p in err.value.problems)
    assert keys == ["launcher.cpus", "launcher.signal_delay_s"]


def test_slurm_refuses_a_sqlite_tracking_store():
    cfg = load_config(["model=tiny", "launcher=slurm"])
    with pytest.raises(ValidationError, match="tracking-server"):
        check_services(cfg, "postgresql+psycopg://me@db/qtts")
    check_services(load_config(["model=tiny", "launcher=slurm", "tracking=none"]), "postgresql+psycopg://me@db/q")


def test_sbatch_script_has_the_resources_and_sigterm(tmp_path):
    """What submitit will hand to sbatch: one GPU per job, TERM (not USR2) before the limit, the setup lines."""
    overrides = ["model=tiny", "launcher=slurm", f"launcher.log_folder={tmp_path}/%j", "launcher.partition=gpu"]
    cfg = load_config([*overrides, "launcher.setup=[module load cuda]", "launcher.time_min=30"])
    executor = make_executor(cfg.launcher, 4, "tiny")
    script = executor._make_submission_file_text("python -m x", "0")  # noqa: SLF001 - submitit's own renderer
    for line in ("--gres=gpu:1", "--partition=gpu", "--time=30", "--cpus-per-task=8", "--signal=TERM@120"):
        assert line in script, script
    assert "module load cuda" in script and "USR2" not in script


@pytest.mark.slow
def test_local_executor_two_jobs_share_the_budget(tmp_path, tiny_model_dir):
    """Two submitit jobs (its local executor), one driver each, on one study: the budget of 2 is respected."""
    from qtts_sweep.cli import main
    from qtts_sweep.sweep.storage import journal_storage

    sweep = two_trial_sweep(tmp_path)
    overrides = [
        *CHEAP, *tiny_paths(tmp_path, tiny_model_dir), "tracking=none",
        "launcher=slurm", "launcher.cluster=local", "launcher.cpus=1", "launcher.time_min=20",
    ]  # fmt: skip
    assert main(["sweep", str(sweep), "--workers", "2", *overrides]) == 0
    states = study_states(journal_storage(str(tmp_path)))
    assert states.count("COMPLETE") >= 2 and states.count("COMPLETE") <= 3, states  # overshoot <= workers - 1
    logs = sorted((tmp_path / "slurm").rglob("*_log.out"))
    assert len(logs) == 2 and all("driver" in p.read_text() for p in logs), logs


# --- a real single-node SLURM -------------------------------------------------------------------------------


def _slurm_skip_reason() -> str | None:
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel") if not shutil.which(b)]
    if missing:
        return f"SLURM/munge binaries missing: {missing} (Debian: slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the single-node SLURM fixture runs slurmd with SlurmUser=root (job launch needs root)"
    return None


class SlurmCluster:
    """munged (as the munge user) + slurmctld + slurmd on this host, all state in one temp folder."""

    def __init__(self, root: Path) -> None:
        self.root, self.host = root, socket.gethostname().split(".")[0]
        self.munge = root / "munge"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        import pwd

        munge = pwd.getpwnam("munge")
        self.munge.mkdir(mode=0o755)
        os.chown(self.munge, munge.pw_uid, munge.pw_gid)
        key = self.munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        m = self.munge
        files = [f"--key-file={key}", f"--socket={m}/munge.socket", f"--pid-file={m}/munged.pid"]
        files += [f"--log-file={m}/munged.log", f"--seed-file={m}/seed"]
        self._run("runuser", "-u", "munge", "--", "munged", *files, "--force")
        for d in ("ctld", "d", "log"):
            (self.root / d).mkdir()
        self.conf.write_text(self._conf())
        self._run("slurmctld", "-f", str(self.conf))
        self._run("slurmd", "-f", str(self.conf))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"slurmd did not register: {out.stdout} {out.stderr}\n{self.logs()}")

    def _conf(self) -> str:
        r = self.root
        return f"""ClusterName=qtts
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge}/munge.socket
CredType=cred/munge
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/d
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=20
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""

    def _run(self, *argv: str) -> None:
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}\n{out.stdout}{out.stderr}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.root.rglob("*.log")))

    def queue(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=self.env, capture_output=True, text=True)
        return out.stdout.split("\n") if out.stdout.strip() else []

    def stop(self) -> None:
        for pidfile in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.munge / "munged.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (OSError, ValueError):
                pass


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="qtts-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except (RuntimeError, OSError, KeyError) as exc:
        cluster.stop()
        pytest.skip(f"a single-node SLURM could not start here: {str(exc)[:1500]}")
    try:
        yield cluster
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=cluster.env, capture_output=True)
        cluster.stop()
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_real_slurm_two_jobs_and_a_scheduler_stop(
    slurm_cluster, pg_cluster, mlflow_pg_server, tmp_path, tiny_model_dir, monkeypatch
):
    """`qtts-sweep sweep ... launcher=slurm --workers 2` on a real SLURM, study in PostgreSQL, MLflow over HTTP.
    Once a trial runs, job 0 gets SIGTERM from the scheduler (`scancel --signal=TERM`): it re-queues its trial (if
    it held one) and exits cleanly; job 1 finishes the budget."""
    from qtts_sweep.sweep.launch import STORAGE_ENV
    from qtts_sweep.sweep.slurm import submit

    for k, v in slurm_cluster.env.items():
        monkeypatch.setenv(k, v)
    storage = pg_cluster.url(pg_cluster.create_db("slurm_study"), with_password=True)
    monkeypatch.setenv(STORAGE_ENV, storage)
    server, _ = mlflow_pg_server
    overrides = [
        *CHEAP, *tiny_paths(tmp_path, tiny_model_dir),
        f"tracking.tracking_uri={server.uri}", "launcher=slurm", "launcher.cpus=1", "launcher.mem=1500M",
        "launcher.gres=null", "launcher.time_min=20",
    ]  # fmt: skip
    jobs = submit(str(two_trial_sweep(tmp_path)), overrides, workers=2, wait=False)
    assert [j.job_id.split("_")[1] for j in jobs] == ["0", "1"]
    deadline, signalled = time.monotonic() + 900, False
    while slurm_cluster.queue() and time.monotonic() < deadline:
        if not signalled and "RUNNING" in study_states(storage):
            subprocess.run(["scancel", "--signal=TERM", jobs[0].job_id], env=slurm_cluster.env, check=True)
            signalled = True
        time.sleep(1)
    job_logs = "\n".join(f"--- {f}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(tmp_path.rglob("*_log.*")))
    assert not slurm_cluster.queue(), f"jobs still queued after 15 min:\n{slurm_cluster.logs()}\n{job_logs}"
    outs = [j.result() for j in jobs]  # each job returned normally (an exception would be raised here)
    assert signalled and "signal" in (outs[0]["stopped_reason"] or ""), outs
    states = study_states(storage)
    assert states.count("COMPLETE") >= 2 and "RUNNING" not in states and "WAITING" not in states, states


def test_the_job_folder_submitit_unpickles_from_is_private(tmp_path):
    """submitit pickles jobs and results into launcher.log_folder: it is created 0700 and refused when another
    user could write it or a folder above it inside runs/ (docs/formats.md)."""
    from qtts_sweep.sweep.slurm import private_job_folder

    runs = tmp_path / "runs"
    runs.mkdir()
    folder = private_job_folder(f"{runs}/slurm/%j", str(runs))
    assert folder == (runs / "slurm").resolve() and folder.stat().st_mode & 0o777 == 0o700
    runs.chmod(0o777)  # a shared runs/: another user could swap the job folder for their own
    try:
        with pytest.raises(ValidationError, match="can run code as you"):
            private_job_folder(f"{runs}/slurm/%j", str(runs))
    finally:
        runs.chmod(0o755)
