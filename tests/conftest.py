"""Shared fixtures: a per-session runs/ folder and the tiny preset built once (real qwen-tts code)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.services import mlflow_pg_server, pg_cluster  # noqa: F401  (one of each per session, for every module)
from tests.helpers.shared import SHARED_ENV

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # `make test` runs TEST_WORKERS pytest processes side by side: each (and every driver or model worker it starts)
    # gets its share of the cores for torch, not all of them (oversubscribed OpenMP threads spin against each other).
    _share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, _share))


MODEL_FIXTURES = {"tiny_model_dir", "tiny_loaded"}  # a test that asks for one of these loads a Qwen3-TTS model


# Seconds each of the longest test files took in one `make test` here (`--durations`, summed per file). Only the
# order matters: `make test` hands whole files to its processes (xdist --dist loadfile) in collection order, so
# the longest go first and the short ones fill the gaps at the end (the Makefile's --no-loadscope-reorder keeps
# this order; xdist's default re-sorts files by test count, and a long file that came late then ran alone on one
# process for up to 100 s). Refresh the numbers when a file's cost changes a lot; a file not listed counts as
# short.
FILE_SECONDS = {
    "test_sweep.py": 290,
    "test_scale_out.py": 190,
    "test_bench.py": 171,
    "test_calibration.py": 150,
    "test_secrets.py": 119,
    "test_promote.py": 116,
    "test_quiet_progress.py": 100,
    "test_demo.py": 77,
    "test_launcher_slurm.py": 71,
    "test_gc.py": 64,
    "test_metrics_audio.py": 60,
    "test_listen_dashboards.py": 56,
    "test_loss.py": 44,
    "test_mlflow_ui.py": 41,
    "test_train.py": 28,
    "test_config.py": 23,
}


def pytest_collection_modifyitems(items) -> None:
    """Every test that loads a model is `slow` (skipped by `make test-fast`), marked or not; the longest files
    first (FILE_SECONDS), the rest in their usual order."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: keeps the order within a file


@pytest.fixture(scope="session", autouse=True)
def runs_dir(tmp_path_factory) -> Path:
    """Every test writes under a temporary runs/ (paths.runs_dir reads QTTS_RUNS_DIR), never the checkout's."""
    path = tmp_path_factory.mktemp("runs")
    os.environ["QTTS_RUNS_DIR"] = str(path)
    # what every xdist process of this run shares (tests/helpers/shared.py): the parent of their own base folders
    base = tmp_path_factory.getbasetemp()
    os.environ[SHARED_ENV] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared")
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
