"""Headless Debian chromium through selenium (chromium-driver), launched the way tests/test_mlflow_ui.py does."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_url(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def venv_script(name: str) -> str:
    """A console script installed next to this Python (optuna-dashboard, mlflow)."""
    return str(Path(sys.executable).parent / name)


def start(argv: list[str], health: str) -> tuple[subprocess.Popen, str]:
    """A server command (`argv`, then `--host 127.0.0.1 --port P` is added) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_url(url + health, proc)
    except Exception:
        proc.terminate()
        raise
    return proc, url


def screenshot(driver, name: str) -> Path:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    path = DOCS_IMG / name
    driver.save_screenshot(str(path))
    return path
