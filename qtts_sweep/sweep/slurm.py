"""`launcher=slurm`: the drivers of one sweep as a SLURM job array, submitted with submitit.

`qtts-sweep sweep NAME launcher=slurm --workers N` prepares the study here (once: `launch.prepare_study`), then
submits N jobs; each runs one driver (`launch.join_study`) with its own model worker on its own GPU against the
shared study and store, and stops when the shared budget is spent. The command prints the job ids and how to
follow them, and returns (`launcher.wait=true` blocks until the jobs end and prints the report).

Stops by the scheduler: SLURM sends SIGTERM on `scancel`, on preemption and at the time limit (plus, through
`--signal=TERM@launcher.signal_delay_s`, that long before the limit, so the trial has time to be re-queued before
the SIGKILL). submitit's own handlers would swallow SIGTERM (it only logs it) and answer SIGUSR2 by exiting
mid-trial; `join_study` installs its own SIGTERM handler over the first, and `WorkerJob` turns SIGUSR2 (submitit's
default preemption signal, `scancel --signal USR2`, the local executor's timeout warning) into the same SIGTERM.
Either way the running trial is failed and re-queued and the job exits normally.

Owns: the executor's parameters, the job callable, the printed follow-up. Does not own: the trial loop, the study
set-up (launch.py), the scheduler itself.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config, LauncherConfig
from qtts_sweep.util.log import get_logger
from qtts_sweep.util.problems import Problem, ValidationError
from qtts_sweep.util.urls import public_overrides, redact, secret_env

log = get_logger(__name__)


@dataclass
class WorkerJob:
    """One array element: a driver joining the prepared study. Picklable (submitit stores it in the job folder),
    so it holds no secret: the storage URL (launch.STORAGE_ENV) and every override holding a credential
    (`util.urls.secret_env`, e.g. a tracking URI with a password) travel in the environment, which sbatch exports
    to the job and the local executor inherits."""

    name: str
    overrides: list[str]
    config_dir: str | None
    threads: int | None

    def __call__(self, index: int) -> dict[str, Any]:
        from qtts_sweep.sweep.launch import join_study

        signal.signal(signal.SIGUSR2, _as_sigterm)
        # Until join_study installs its own handler (a stop while the config and study load), and after it
        # restores this one: stop without a trial to re-queue.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            outcome = join_study(self.name, self.overrides, self.config_dir, threads=self.threads, index=index)
            trials, reason = outcome.trials_run, outcome.stopped_reason
        except KeyboardInterrupt:
            trials, reason = [], "stopped by a signal before the driver started a trial"
        print(f"driver {index}: ran trials {trials}" + (f"; {reason}" if reason else ""), flush=True)
        return {"index": index, "trials_run": trials, "stopped_reason": reason}


def worker_job(name: str, overrides: list[str], config_dir: str | None, threads: int | None) -> WorkerJob:
    """The job submitit pickles into the job folder: overrides holding a credential left out (they go through
    the environment, `util.urls.secret_env`)."""
    folder = str(Path(config_dir).resolve()) if config_dir else None
    return WorkerJob(name, public_overrides(overrides), folder, threads)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _as_sigterm(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def make_executor(launcher: LauncherConfig, workers: int, study: str):
    """A submitit executor for `workers` jobs with the launcher's resources."""
    import submitit

    folder = launcher.log_folder
    if launcher.cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.time_min, signal_delay_s=launcher.signal_delay_s)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    optional = {"partition": launcher.partition, "account": launcher.account, "qos": launcher.qos}
    optional |= {"mem": launcher.mem, "gres": launcher.gres}
    executor.update_parameters(
        job_name=f"qtts-{study}",
        time=launcher.time_min,
        nodes=1,
        ntasks_per_node=1,
        cpus_per_task=launcher.cpus,
        setup=list(launcher.setup),
        array_parallelism=workers,
        signal_delay_s=launcher.signal_delay_s,
        # SIGTERM, not submitit's SIGUSR2: one signal means "stop" whatever sent it (see the module docstring).
        additional_parameters={"signal": f"TERM@{launcher.signal_delay_s}"},
        **{k: v for k, v in optional.items() if v},
    )
    return executor


def check_services(cfg: Config, storage_url: str) -> None:
    """Jobs on other nodes cannot share a SQLite file: the tracking store must be a server (or tracking off).
    A file study storage only works while every job runs on this machine; say so."""
    problems: list[Problem] = []
    tracking = cfg.tracking
    if cfg.launcher.cluster == "slurm" and tracking.backend == "mlflow" and tracking.tracking_uri.startswith("sqlite"):
        problems.append(
            Problem(
                "tracking.tracking_uri",
                tracking.tracking_uri,
                "SLURM jobs cannot all write one SQLite file (other nodes, concurrent writers)",
                "start a server (`qtts-sweep tracking-server`) and pass the tracking.tracking_uri=http://... it "
                "prints, or tracking=none",
            )
        )
    if problems:
        raise ValidationError(problems, "launcher=slurm")
    if cfg.launcher.cluster == "slurm" and not storage_url.startswith(("postgresql", "mysql")):
        log.warning(
            f"the study is in {redact(storage_url)}: fine while every job runs on this machine; for "
            "several nodes use a database server (--storage postgresql+psycopg://USER@HOST/DB, password in "
            "~/.pgpass)"
        )


def private_job_folder(log_folder: str, runs_dir: str) -> Path:
    """Create submitit's job folder (the part of `log_folder` before its first `%`) with mode 0700 and refuse it
    when another user could write it or a parent folder up to `runs_dir` (or its own parent when outside it):
    submitit unpickles what is there, so a writer of that folder runs code as you."""
    import stat

    folder = Path(log_folder.split("%", 1)[0]).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    runs = Path(runs_dir).resolve()
    chain = [folder, *folder.parents]
    stop = chain.index(runs) + 1 if runs in chain else 2
    problems = []
    for path in chain[:stop]:
        st = path.stat()
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
        if shared or st.st_uid != os.getuid():
            problems.append(
                Problem(
                    "launcher.log_folder",
                    str(path),
                    f"is writable by other users or not yours (mode {stat.filemode(st.st_mode)}): submitit "
                    "unpickles the job files there, so anyone who can write it can run code as you",
                    f"chmod go-w {path}, or set launcher.log_folder to a folder only you can write",
                )
            )
    if problems:
        raise ValidationError(problems, "launcher=slurm")
    return folder


def launcher_kind(name: str, overrides: list[str], config_dir: str | None = None) -> str:
    """`local` or `slurm`: the launcher group of the config the sweep's trials start from."""
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.launch import resolve_spec

    return resolve_spec(name, lambda ov: load_config(ov, config_dir), overrides)[1].launcher.kind


def submit(
    name: str, overrides: list[str], workers: int, config_dir: str | None = None, wait: bool | None = None
) -> list:
    """Prepare the study, submit `workers` driver jobs, print their ids and how to follow them; with `wait`
    (launcher.wait, always for cluster=local) block until they end and print the sweep report."""
    from qtts_sweep.sweep.launch import STORAGE_ENV, prepare_study
    from qtts_sweep.sweep.report import finish_sweep

    prepared = prepare_study(name, overrides, config_dir, workers)
    cfg, launcher = prepared.cfg, prepared.cfg.launcher
    check_services(cfg, prepared.storage_url)
    os.environ[STORAGE_ENV] = prepared.storage_url  # exported to the jobs; never pickled or written by us
    os.environ.update(secret_env(overrides))  # likewise the overrides that hold a credential
    private_job_folder(launcher.log_folder, cfg.paths.runs_dir)  # submitit pickles jobs there (docs/formats.md)
    executor = make_executor(launcher, workers, prepared.spec.study_name)
    job = worker_job(name, overrides, config_dir, launcher.cpus)
    jobs = executor.map_array(job, list(range(workers)))
    print(follow_lines(jobs, launcher))
    wait = launcher.cluster == "local" or (launcher.wait if wait is None else wait)
    if not wait:
        return jobs
    for j in jobs:
        j.result()  # a job that failed raises here with its traceback (and its log path)
    finish_sweep(prepared.spec, prepared.storage_url, prepared.parent_run_id, cfg, None)
    return jobs


def follow_lines(jobs: list, launcher: LauncherConfig) -> str:
    ids = [str(j.job_id) for j in jobs]
    lines = [f"submitted {len(jobs)} driver job(s): {' '.join(ids)}"]
    if launcher.cluster == "slurm":
        array = ids[0].split("_", 1)[0]
        lines += [
            f"  follow:  squeue -j {array}",
            f"  history: sacct -j {array} --format=JobID,State,Elapsed,NodeList  (needs SLURM accounting)",
            f"  stop:    scancel {array}   (each running trial is failed and re-queued)",
        ]
    lines += [f"  logs:    {jobs[0].paths.stdout}  (one per job; stderr: {jobs[0].paths.stderr.name})"]
    return "\n".join(lines)
