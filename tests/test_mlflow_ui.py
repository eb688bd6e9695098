"""The MLflow UI shows a study's trial runs and plays their audio: a real server, a real headless Chromium."""

from __future__ import annotations

import sys

import pytest

from qtts_sweep.tracking.mlflow_tracker import STUDY_PREFIX
from tests.helpers.browser import browser as new_browser
from tests.helpers.browser import start as start_server
from tests.helpers.sweeps import tiny_sweep
from tests.helpers.system_deps import require_commands

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _browser_installed():
    """Before the costly sweep fixture: Debian chromium + chromium-driver."""
    require_commands("chromium", "chromedriver")


FIND_AUDIO = """
function find(root) {
  const a = root.querySelector('audio');
  if (a) return a;
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; }
  }
  return null;
}
const a = find(document);
return a && a.readyState >= 1 && a.duration > 0 ? a.duration : false;
"""


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    driver = tiny_sweep(tmp_path, tiny_model_dir, n_trials=2)
    driver.run()
    cfg = driver.cfg0
    proc, url = start_server(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cfg.tracking.tracking_uri, "--workers", "1"],
        "/health",
    )
    try:
        yield url, cfg
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_trial_runs_show_and_a_wav_artifact_plays(server, tmp_path):
    from mlflow import MlflowClient
    from selenium.webdriver.support.ui import WebDriverWait

    url, cfg = server
    client = MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    run = client.search_runs([exp.experiment_id], "tags.qtts_role = 'trial' and attributes.status = 'FINISHED'")[0]
    wav = [a.path for a in client.list_artifacts(run.info.run_id, "wavs")][0]
    browser = new_browser()
    try:
        browser.get(f"{url}/#/experiments/{exp.experiment_id}/runs")
        # trial runs are children of the study's parent run: expand it in the runs table
        expander = (
            "//*[normalize-space(text())='study-tiny']/ancestor::*[contains(@class,'ag-cell')][1]"
            "//*[self::button or @role='button']"
        )
        WebDriverWait(browser, 60).until(lambda b: b.find_elements("xpath", expander))[0].click()
        WebDriverWait(browser, 60).until(lambda b: "trial-0" in b.page_source and "trial-1" in b.page_source)
        browser.get(f"{url}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/artifacts/{wav}")
        # The artifact viewer's player (wavesurfer) keeps its <audio> element inside a shadow root.
        duration = WebDriverWait(browser, 60).until(lambda b: b.execute_script(FIND_AUDIO))
        assert duration > 0
    except Exception:
        browser.save_screenshot(str(tmp_path / "mlflow_ui_failure.png"))  # the page as the test last saw it
        raise
    finally:
        browser.quit()
