"""Shared fixtures: a per-session runs/ folder and the tiny preset built once (real qwen-tts code)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.services import mlflow_pg_server, pg_cluster  # noqa: F401  (one of each per session, for every module)

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEMO_DIR = PROJECT_DIR / "data" / "demo"
# Cheap sweep trials on the tiny preset: two optimizer steps per epoch, two short val lines, no MOS model.
CHEAP = [
    "train.max_steps_per_epoch=2",
    "eval.max_lines=2",
    "eval.batch_size=2",
    "eval.decoding.frames_per_char=0.3",
    "eval.decoding.min_frames=6",
    "eval.metrics.mos=none",
]


def tiny_sweep(tmp, tiny_model_dir, name: str = "tiny", n_trials: int = 4, extra=(), log=None, **spec_changes):
    """A SweepDriver for `sweeps/<name>.yaml` on the tiny preset, writing under `tmp`."""
    import dataclasses

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.driver import SweepDriver
    from qtts_sweep.sweep.spec import load_spec

    spec = dataclasses.replace(load_spec(name), n_trials=n_trials, **spec_changes)
    base = [*CHEAP, f"paths.runs_dir={tmp}", f"paths.models_dir={tiny_model_dir.parent}", *extra]
    return SweepDriver(spec, lambda ov: load_config(ov), base, log=log or (lambda m: None))


@pytest.fixture(scope="session", autouse=True)
def runs_dir(tmp_path_factory) -> Path:
    """Every test writes under a temporary runs/ (paths.runs_dir reads QTTS_RUNS_DIR), never the checkout's."""
    path = tmp_path_factory.mktemp("runs")
    os.environ["QTTS_RUNS_DIR"] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(runs_dir) -> Path:
    from qtts_sweep.model.tiny import build_tiny_model

    return build_tiny_model(runs_dir / "models" / "tiny-seed0", seed=0)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.model.modeling import load_model

    cfg = load_config(["model=tiny"])
    assert Path(cfg.model.source) == tiny_model_dir
    return load_model(cfg.model)
