"""Comparing trials by ear, in a real headless Chromium: the blind A/B listening page (play, choose, stored in the
study and on the MLflow parent run, shown by the report), optuna-dashboard (named objective, a trial's wav artifact
plays) and the MLflow UI (opens on the runs, system metrics logged). Screenshots go to docs/img/ for the README.

One tiny sweep for the whole module (3 trials, no pruning: three distinct (checkpoint, scale) pairs).
"""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from qtts_sweep.sweep import listen, preference
from qtts_sweep.sweep.report import format_table
from qtts_sweep.sweep.storage import load_existing_study
from qtts_sweep.tracking.mlflow_tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, STUDY_PREFIX, UI_PATH
from tests.helpers import browser
from tests.helpers.sweeps import tiny_sweep
from tests.helpers.system_deps import require_commands

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _browser_installed():
    """Before the costly sweep fixture: Debian chromium + chromium-driver."""
    require_commands("chromium", "chromedriver")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("listen")
    driver = tiny_sweep(tmp, tiny_model_dir, n_trials=3, pruner="none")
    driver.run()
    return tmp, driver.cfg0, driver.storage_url


@pytest.fixture(scope="module")
def chrome():
    driver = browser.browser()
    try:
        yield driver
    finally:
        driver.quit()


PLAYING = """
const a = document.getElementById(arguments[0]);
return a.readyState >= 2 && (a.currentTime > 0 || !a.paused) && a.duration > 0;
"""


def test_listening_page_plays_both_sides_and_stores_the_choice(swept, chrome):
    from selenium.webdriver.support.ui import WebDriverWait

    tmp, cfg, storage = swept
    session = listen.open_session(cfg, "tiny", storage, pairs=3, seed=0)
    assert len(session.pool) == 3 and session.lines
    assert all(set(line.anchors) == {"ground truth", "codec ceiling"} for line in session.lines)
    server = listen.make_server(session, "tiny")
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chrome.get(f"http://127.0.0.1:{server.server_port}/")
        WebDriverWait(chrome, 30).until(lambda b: b.find_element("id", "text").text)
        page = chrome.page_source
        assert "ground truth" in page and "codec ceiling" in page
        assert not any(f"trial {c.trial}" in page for c in session.pool)  # blind: no trial names on the page
        assert not chrome.find_element("id", "choose-a").is_enabled()  # nothing to choose before listening
        for side in ("a", "b"):
            chrome.execute_script(f"document.getElementById('{side}').play()")
            WebDriverWait(chrome, 30).until(lambda b, s=side: b.execute_script(PLAYING, s))
        shown = dict(next(iter(session.pending.values())))
        browser.screenshot(chrome, "listen.png")
        chrome.find_element("id", "choose-a").click()
        WebDriverWait(chrome, 30).until(lambda b: b.find_element("tag name", "body").get_attribute("data-stored"))
    finally:
        server.shutdown()
        server.server_close()

    study = load_existing_study("tiny", storage)
    stored = preference.judgements(study)
    assert len(stored) == 1
    assert (stored[0]["a"], stored[0]["b"], stored[0]["line"]) == (shown["a"], shown["b"], shown["line"])
    assert stored[0]["choice"] == shown["a"]  # "A is better" is A's trial, whichever trial A was
    tallies = preference.tally(study)
    assert (tallies[shown["a"]].wins, tallies[shown["b"]].losses) == (1, 1)

    # a second listener's judgement lands beside the first, never over it; "same" is a tie for both
    preference.record(study, shown["a"], shown["b"], shown["line"], preference.SAME, "other")
    assert len(preference.judgements(study)) == 2
    assert preference.tally(study)[shown["b"]].short() == "0-1-1/2"

    table = format_table(study)
    assert "listen W-L-T/n" in table and "human preference" in table and "2 judgements" in table

    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    parent = client.search_runs([exp.experiment_id], "tags.qtts_role = 'parent'")[0]
    assert parent.data.metrics["listen_judgements"] == 1.0  # logged by the page's judgement
    assert parent.data.metrics[f"listen_trial{shown['a']}_wins"] == 1.0


def test_optuna_dashboard_names_the_objective_and_plays_a_trials_wav(swept, chrome):
    from selenium.webdriver.support.ui import WebDriverWait

    from qtts_sweep.sweep.record import artifact_dir

    tmp, cfg, storage = swept
    study = load_existing_study("tiny", storage)
    assert study.metric_names == ["composite objective"]
    assert all(t.system_attrs.get(k) for t in study.trials for k in t.system_attrs if k.startswith("artifacts:"))
    assert sum(k.startswith("artifacts:") for t in study.trials for k in t.system_attrs) >= 3
    proc, url = browser.start(
        [browser.venv_script("optuna-dashboard"), storage, "--artifact-dir", str(artifact_dir(cfg.paths.runs_dir))],
        "/api/meta",
    )
    try:
        with urllib.request.urlopen(f"{url}/api/studies") as r:  # the dashboard's own id of the study
            sid = next(s["study_id"] for s in json.load(r)["study_summaries"] if s["study_name"] == "tiny")
        chrome.get(f"{url}/dashboard/studies/{sid}")
        WebDriverWait(chrome, 60).until(lambda b: "composite objective" in b.page_source)
        browser.screenshot(chrome, "optuna-dashboard.png")
        chrome.get(f"{url}/dashboard/studies/{sid}/trials")  # the first trial's page, its artifacts at the bottom
        found = """const a = document.querySelector('audio');
                   return a && a.readyState >= 1 && a.duration > 0 ? a.duration : false;"""
        assert WebDriverWait(chrome, 60).until(lambda b: b.execute_script(found)) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_ui_opens_on_the_runs_and_trials_carry_system_metrics(swept, chrome):
    from mlflow import MlflowClient
    from selenium.webdriver.support.ui import WebDriverWait

    tmp, cfg, storage = swept
    client = MlflowClient(cfg.tracking.tracking_uri)
    for name in (STUDY_PREFIX + "tiny", cfg.tracking.training_experiment):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    exp = client.get_experiment_by_name(STUDY_PREFIX + "tiny")
    trials = client.search_runs([exp.experiment_id], "tags.qtts_role = 'trial'")
    assert trials and all(any(k.startswith("system/cpu") for k in r.data.metrics) for r in trials)
    proc, url = browser.start(
        [browser.venv_script("mlflow"), "server", "--backend-store-uri", cfg.tracking.tracking_uri, "--workers", "1"],
        "/health",
    )
    try:
        # the link the project prints opens the model-training view: the experiment's runs, not its GenAI overview
        chrome.get(f"{url}/{UI_PATH}")
        WebDriverWait(chrome, 90).until(lambda b: "qtts-study-tiny" in b.page_source)
        chrome.get(f"{url}/#/experiments/{exp.experiment_id}?{UI_PATH.split('?')[1]}")
        WebDriverWait(chrome, 90).until(lambda b: "study-tiny" in b.page_source and "/runs" in b.current_url)
        expander = (  # trial runs are children of the study's parent run: expand it (as tests/test_mlflow_ui.py)
            "//*[normalize-space(text())='study-tiny']/ancestor::*[contains(@class,'ag-cell')][1]"
            "//*[self::button or @role='button']"
        )
        WebDriverWait(chrome, 60).until(lambda b: b.find_elements("xpath", expander))[0].click()
        WebDriverWait(chrome, 60).until(lambda b: "trial-0" in b.page_source and "trial-2" in b.page_source)
        browser.screenshot(chrome, "mlflow.png")
    except Exception:
        chrome.save_screenshot(str(tmp / "mlflow_failure.png"))  # the page as the test last saw it
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=30)
