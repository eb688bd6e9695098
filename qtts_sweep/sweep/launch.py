"""Starting a sweep: `qtts-sweep sweep NAME` (compose, validate, run: `run_sweep`), `--plan`, the Hydra sweeper's
entry point (the same `run_sweep` after Hydra composed the config), many drivers on one study, and the closing
lines that say where to look.

Many workers (`--workers N`, or SLURM jobs) are N independent driver processes on one shared study, with no batch
barrier: each asks for its next trial as soon as its last one ends. Everything that must happen once happens in
`prepare_study` before any driver starts (creating the study's schema concurrently fails; recovering stale trials
or enqueuing baselines twice would duplicate trials); each driver then runs `join_study`.

Owns: resolving a sweep file against the composed config (once, the same way for every entry),
starting and waiting for local drivers. Does not own: the trial loop (driver.py) or the report (report.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep.driver import SweepDriver, SweepOutcome
from qtts_sweep.sweep.progress import SweepProgress, watch_drivers
from qtts_sweep.sweep.spec import SweepSpec, check_against, format_plan, load_spec, lora_param_count, plan
from qtts_sweep.util.log import get_logger
from qtts_sweep.util.urls import overrides_from_env, public_overrides, redact, secret_env

log = get_logger(__name__)


def resolve_spec(name: str, compose: Callable[[list[str]], Config], overrides: list[str]) -> tuple[SweepSpec, Config]:
    """The sweep file and the config its trials start from; refuses epochs beyond the horizon before anything runs.

    The sweep file's `base` overrides may change `train.max_epochs`, so the file is checked against the config
    composed with them.
    """
    spec = load_spec(name)  # the sweep file is read once per launch
    cfg = compose([*spec.base, *overrides])
    return check_against(spec, cfg), cfg


STORAGE_ENV = "QTTS_SWEEP_STORAGE"  # a storage URL given on the command line reaches drivers here, not in argv


def storage_for(spec: SweepSpec, cfg: Config, workers: int) -> str:
    """The study's storage: the sweep file's (or --storage, via STORAGE_ENV), else a file under runs/: SQLite for
    one driver; Optuna's journal file for several on one machine (SQLite must not serve parallel writers)."""
    from qtts_sweep.sweep.storage import default_storage, journal_storage

    given = os.environ.get(STORAGE_ENV) or spec.storage
    if given:
        return given
    return default_storage(cfg.paths.runs_dir) if workers == 1 else journal_storage(cfg.paths.runs_dir)


@dataclasses.dataclass
class Prepared:
    spec: SweepSpec
    cfg: Config
    storage_url: str
    parent_run_id: str | None


def prepare_study(
    name: str, overrides: list[str], config_dir: str | None = None, workers: int = 1, compose: Callable | None = None
) -> Prepared:
    """Once, before any driver starts: validate, create the study, recover stale trials, enqueue baselines, create
    the MLflow parent run."""
    from qtts_sweep.config.loader import load_config

    compose = compose or (lambda ov: load_config(ov, config_dir))
    spec, cfg = resolve_spec(name, compose, overrides)
    spec = dataclasses.replace(spec, storage=storage_for(spec, cfg, workers))
    driver = SweepDriver(spec, compose, overrides, cfg0=cfg)
    parent = driver.prepare()
    return Prepared(spec, cfg, spec.storage, parent)


def join_study(
    name: str,
    overrides: list[str],
    config_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    index: int = 0,
) -> SweepOutcome:
    """One driver on a prepared study until the shared budget is spent. SIGTERM (scheduler stop, preemption, time
    limit) fails and re-queues the running trial, then returns normally. `index` (0..N-1) offsets the sampler's
    seed: drivers with one seed would draw the same random points. Overrides holding a credential arrive through
    the environment (`util.urls.secret_env`), never in argv or a pickled job."""
    from qtts_sweep.config.loader import load_config

    overrides = [*(o for o in overrides_from_env() if o not in overrides), *overrides]  # argv's `extra` wins
    extra = [f"model.device={device}"] if device else []
    compose = lambda ov: load_config(ov, config_dir)  # noqa: E731
    spec, cfg = resolve_spec(name, compose, [*overrides, *extra])
    spec = dataclasses.replace(spec, storage=os.environ.get(STORAGE_ENV) or spec.storage)
    spec = dataclasses.replace(spec, sampler_seed=spec.sampler_seed + index)
    driver = SweepDriver(spec, compose, [*overrides, *extra], threads=threads, cfg0=cfg)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return driver.run(join=True)
    except KeyboardInterrupt:
        return driver.outcome(stopped_reason="stopped by a signal; the running trial was re-queued")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def device_plan(workers: int, devices: str | None) -> list[tuple[str | None, int | None]]:
    """(device, CPU threads) per driver: `devices` ("0,1,3") or cuda:0..N-1 in turn when CUDA is there; on CPU,
    each driver gets its share of the cores."""
    if devices:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        return [(f"cuda:{ids[i % len(ids)]}" if ids[i % len(ids)].isdigit() else ids[i % len(ids)], None)
                for i in range(workers)]  # fmt: skip
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [(f"cuda:{i % n}", None) for i in range(workers)]
    share = max(1, (os.cpu_count() or 1) // workers)
    return [("cpu", share) for _ in range(workers)]


def run_local_workers(
    name: str,
    overrides: list[str],
    workers: int,
    devices: str | None = None,
    config_dir: str | None = None,
    threads: int | None = None,
    log_dir: Path | None = None,
) -> Prepared:
    """`--workers N` on one machine: prepare once, then N driver processes (`sweep --join`), each pinned to one
    device, and wait for all of them. Ctrl-C reaches every driver (one process group): each fails and re-queues
    its running trial and stops."""
    from qtts_sweep.tracking.server import start_mlflow_server

    prepared = prepare_study(name, overrides, config_dir, workers)
    server = None
    extra: list[str] = []
    tracking = prepared.cfg.tracking
    if tracking.backend == "mlflow" and tracking.tracking_uri.startswith("sqlite:"):
        # SQLite takes one writer: the drivers log over HTTP to one server that owns the file.
        server = start_mlflow_server(tracking.tracking_uri, tracking.artifact_location)
        extra = [f"tracking.tracking_uri={server.uri}"]
    env = driver_env(prepared.storage_url, overrides)
    commands = driver_commands(name, overrides, workers, devices, config_dir, threads, extra)
    procs = []
    try:
        for i, cmd in enumerate(commands):
            out = open(Path(log_dir) / f"driver-{i}.log", "w") if log_dir else None  # noqa: SIM115 - closed by exit
            procs.append(subprocess.Popen(cmd, env=env, stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT))
        codes = watch_drivers(procs, SweepProgress(prepared.spec.n_trials), lambda: _open_prepared(prepared))
    except KeyboardInterrupt:
        codes = [_wait_or_kill(p) for p in procs]
        raise
    finally:
        if server:
            server.stop()
    for i, code in enumerate(codes):
        if code:  # its RUNNING trial was failed and re-queued by the drivers that went on (recovery.py)
            log.warning(f"driver {i} exited with {_exit_text(code)}; the other drivers recovered its trial")
    return prepared


def driver_env(storage_url: str, overrides: list[str]) -> dict[str, str]:
    """The drivers' environment: the storage URL and every override holding a credential travel here, not in argv
    (which `ps` shows to every user of the machine)."""
    return {**os.environ, STORAGE_ENV: storage_url, "PYTHONUNBUFFERED": "1", **secret_env(overrides)}


def driver_commands(
    name: str,
    overrides: list[str],
    workers: int,
    devices: str | None = None,
    config_dir: str | None = None,
    threads: int | None = None,
    extra: list[str] | None = None,
) -> list[list[str]]:
    """argv of each local driver (`sweep --join`): its index, device and threads, then the overrides that hold no
    credential (`driver_env` carries the others), then `extra` (e.g. the local MLflow server's URI)."""
    base = [sys.executable, "-m", "qtts_sweep.cli", "sweep", name, "--join"]
    if config_dir:
        base += ["--config-dir", str(config_dir)]
    commands = []
    for i, (device, share) in enumerate(device_plan(workers, devices)):
        n = threads or share
        commands.append(
            [
                *base,
                "--index",
                str(i),
                *(["--device", device] if device else []),
                *(["--threads", str(n)] if n else []),
                *public_overrides(overrides),
                *(extra or []),
            ]
        )
    return commands


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def _open_prepared(prepared: Prepared):
    from qtts_sweep.sweep.search import open_study
    from qtts_sweep.sweep.storage import make_storage

    return open_study(prepared.spec, make_storage(prepared.storage_url))


def _wait_or_kill(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_sweep(
    name: str,
    overrides: list[str],
    compose: Callable[[list[str]], Config],
    workers: int = 1,
    devices: str | None = None,
    config_dir: str | None = None,
) -> SweepOutcome | Prepared:
    """The one way a sweep runs, whichever entry point composed the config: one driver in this process, or N
    driver processes on one study (`run_local_workers`); then the report."""
    from qtts_sweep.sweep.report import finish_sweep

    if workers > 1:
        prepared = run_local_workers(name, list(overrides), workers, devices or None, config_dir)
        finish_sweep(prepared.spec, prepared.storage_url, prepared.parent_run_id, prepared.cfg, None)
        return prepared
    spec, spec_cfg = resolve_spec(name, compose, list(overrides))
    spec = dataclasses.replace(spec, storage=storage_for(spec, spec_cfg, 1))
    progress = SweepProgress(spec.n_trials)
    try:
        driver = SweepDriver(spec, compose, list(overrides), log=progress.log, progress=progress, cfg0=spec_cfg)
        outcome = driver.run()
    finally:
        progress.close()
    finish_sweep(spec, outcome.storage, outcome.parent_run_id, spec_cfg, outcome.base_eval_dir)
    return outcome


def sweep_from_hydra(
    sweep_name: str, arguments: list[str], hydra_context: Any, config: Any, workers: int = 1, devices: str = ""
) -> SweepOutcome | Prepared:
    """Entry from the Hydra sweeper plugin (users who launch with Hydra's own `-m`): the base config is composed by
    Hydra's config loader, then the same `run_sweep` as `qtts-sweep sweep`. Extra drivers (`workers` > 1) compose
    their config with the shipped conf/ and the given overrides (a Hydra `--config-dir` does not reach them: use
    `qtts-sweep sweep --config-dir` for that)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from qtts_sweep.config.loader import compose_with, finish

    loader = hydra_context.config_loader

    def compose(overrides: list[str]) -> Config:
        def once(ov: list[str]):
            return loader.load_configuration(config_name="config", overrides=ov, run_mode=RunMode.MULTIRUN)

        cfg = compose_with(once, overrides)
        return finish(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))

    return run_sweep(sweep_name, list(arguments), compose, workers, devices or None)


def model_config_dict(cfg: Config) -> dict:
    """config.json of the configured model without loading weights (for planning)."""
    from qtts_sweep.model.tiny import shaped_model_config

    folder = Path(cfg.model.source)
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    if cfg.model.tiny:
        return shaped_model_config("tiny")
    return shaped_model_config("0.6b" if "0.6B" in cfg.model.source else "1.7b")


def plan_sweep(name: str, overrides: list[str], config_dir: str | None = None) -> str:
    """`qtts-sweep sweep <name> --plan`: validate the sweep and print what it can cost."""
    from qtts_sweep.config.loader import load_config

    # A plan never loads the model: it is made where the weights may not be (yet).
    spec, cfg = resolve_spec(name, lambda ov: load_config(ov, config_dir, check_model=False), overrides)
    model = model_config_dict(cfg)

    def lora_params(r: int) -> int:
        return lora_param_count(model, r, cfg.lora.target_modules, cfg.lora.scope)

    return format_plan(spec, plan(spec, cfg, lora_params))


def launch(
    name: str, overrides: list[str], config_dir: str | None = None, workers: int = 1, devices: str | None = None
) -> int:
    """`qtts-sweep sweep <name>`: compose with the shipped conf/ (and `config_dir` first), run the sweep.

    No Hydra command line in between: the overrides and `--config-dir` go straight to the composition the other
    subcommands use (`--plan` and `check` accept exactly the same line), and to every driver with `--workers`.
    """
    from qtts_sweep.config.loader import load_config

    run_sweep(name, overrides, lambda ov: load_config(ov, config_dir), workers, devices, config_dir)
    return 0


def closing_lines(cfg: Config, study_name: str, storage: str) -> str:
    from qtts_sweep.sweep.record import artifact_dir
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    return "\n".join(
        [
            f"study `{study_name}` in {redact(storage)}",
            f"  MLflow UI:        {make_tracker(cfg.tracking).ui_command()}",
            f"  optuna-dashboard: optuna-dashboard {redact(storage)} --artifact-dir {artifact_dir(cfg.paths.runs_dir)}"
            " --host 127.0.0.1 --port 8080",
            f"  listen (A/B):     qtts-sweep listen {study_name}",
            f"  again:            qtts-sweep report {study_name}",
            f"  promote the best: qtts-sweep promote {study_name}",
        ]
    )
