"""Starting a sweep: `qtts-sweep sweep NAME` (validate, then a Hydra multirun through the qtts sweeper),
`--plan`, the sweeper's entry point, and the closing lines that say where to look.

Owns: resolving a sweep file against the composed config (once, the same way for every entry), the Hydra command
line. Does not own: the trial loop (driver.py) or the report (report.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep.driver import SweepDriver, SweepOutcome
from qtts_sweep.sweep.spec import SweepSpec, format_plan, load_spec, lora_param_count, plan
from qtts_sweep.util.urls import redact


def resolve_spec(name: str, compose: Callable[[list[str]], Config], overrides: list[str]) -> tuple[SweepSpec, Config]:
    """The sweep file and the config its trials start from; refuses epochs beyond the horizon before anything runs.

    The sweep file's `base` overrides may change `train.max_epochs`, so the file is checked against the config
    composed with them.
    """
    spec = load_spec(name)
    cfg = compose([*spec.base, *overrides])
    return load_spec(name, cfg=cfg), cfg


def sweep_from_hydra(sweep_name: str, arguments: list[str], hydra_context: Any, config: Any) -> SweepOutcome:
    """Entry from the Hydra sweeper plugin: the base config is composed by Hydra's own config loader."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from qtts_sweep.config.loader import compose_with, finish
    from qtts_sweep.sweep.report import finish_sweep

    loader = hydra_context.config_loader

    def compose(overrides: list[str]) -> Config:
        def once(ov: list[str]):
            return loader.load_configuration(config_name="config", overrides=ov, run_mode=RunMode.MULTIRUN)

        cfg = compose_with(once, overrides)
        return finish(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))

    spec, spec_cfg = resolve_spec(sweep_name, compose, list(arguments))
    outcome = SweepDriver(spec, compose, list(arguments)).run()
    finish_sweep(spec, outcome, spec_cfg, outcome.base_eval_dir)
    return outcome


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

    spec, cfg = resolve_spec(name, lambda ov: load_config(ov, config_dir), overrides)
    model = model_config_dict(cfg)

    def lora_params(r: int) -> int:
        return lora_param_count(model, r, cfg.lora.target_modules, cfg.lora.scope)

    return format_plan(spec, plan(spec, cfg, lora_params))


def launch(name: str, overrides: list[str], config_dir: str | None = None) -> int:
    """`qtts-sweep sweep <name>`: validate, then run the Hydra multirun with the qtts sweeper."""
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.hydra_app import run

    spec, cfg = resolve_spec(name, lambda ov: load_config(ov, config_dir), overrides)
    sweep_dir = Path(cfg.paths.runs_dir) / "sweeps" / spec.study_name
    argv = [
        "--multirun",
        "hydra/sweeper=qtts",
        f"hydra.sweeper.sweep={spec.source}",
        f"hydra.sweep.dir={sweep_dir}/hydra",
        "hydra.job.chdir=false",
        # Hydra's logging config would route every library's INFO messages to the console.
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    if config_dir:
        argv += ["--config-dir", str(Path(config_dir).resolve())]
    return run([*argv, *overrides])


def closing_lines(cfg: Config, study_name: str, storage: str) -> str:
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    return "\n".join(
        [
            f"study `{study_name}` in {redact(storage)}",
            f"  MLflow UI:        {make_tracker(cfg.tracking).ui_command()}",
            f"  optuna-dashboard: optuna-dashboard {redact(storage)} --host 127.0.0.1 --port 8080",
            f"  again:            qtts-sweep report {study_name}",
            f"  promote the best: qtts-sweep promote {study_name}",
        ]
    )
