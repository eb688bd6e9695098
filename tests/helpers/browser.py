"""Headless Debian chromium through selenium (chromium-driver), launched the way tests/test_mlflow_ui.py does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.services import free_port, wait_http

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"  # README screenshots, rewritten by the tests

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1400,1000",
)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in FLAGS:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def venv_script(name: str) -> str:
    """A console script installed next to this Python (optuna-dashboard, mlflow)."""
    return str(Path(sys.executable).parent / name)


def start(argv: list[str], health: str) -> tuple[subprocess.Popen, str]:
    """A server command (`argv`, then `--host 127.0.0.1 --port P` is added) on a free loopback port. An `mlflow
    server` runs as the project starts its own (qtts_sweep/tracking/server.py): without MLflow's job execution."""
    from qtts_sweep.tracking.server import JOB_EXECUTION_ENV

    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={JOB_EXECUTION_ENV: "false", **os.environ},  # off unless the environment says otherwise, as there
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + health, proc)
    except Exception:
        proc.terminate()
        raise
    return proc, url


def screenshot(driver, name: str) -> Path:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    path = DOCS_IMG / name
    driver.save_screenshot(str(path))
    return path
