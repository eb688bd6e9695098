"""Credentials in URLs are masked everywhere the project shows or keeps a URL: passwords with `/` or spaces,
secret query parameters, `tracking.tracking_uri` in the registry-lookup error, `qtts-sweep check` output, each
checkpoint's config.yaml, local drivers' argv and the job submitit pickles into its folder. Cheap checks (no
model); tests/test_secrets.py greps a whole sweep's outputs."""

from __future__ import annotations

import pickle

import pytest

from qtts_sweep.util.urls import redact, redact_url

SECRET = "S3cr/et p@ss"  # a slash, a space and an @: percent-encoded in a URL as it must be
ENCODED = "S3cr%2Fet%20p%40ss"

URLS = [
    f"postgresql+psycopg://qtts:{ENCODED}@db-host:5432/qtts",
    "postgresql+psycopg://qtts:S3cr/et@db-host/qtts",  # a raw slash (not a valid URL, still masked)
    "postgresql+psycopg://qtts:S3cr et@db-host/qtts",  # a raw space
    "postgresql+psycopg://qtts@db-host/qtts?sslmode=require&password=S3cret",
    "mysql+pymysql://qtts@db-host/qtts?passwd=S3cret&charset=utf8mb4",
    f"http://qtts:{ENCODED}@mlflow-host:5000",
    "https://mlflow-host/api?token=S3cret",
]


@pytest.mark.parametrize("url", URLS)
def test_a_url_loses_its_password_wherever_it_ends(url):
    for shown in (redact_url(url), redact(url), redact(f"could not reach {url}: timeout"), redact(f"{url} is down")):
        assert "S3cr" not in shown, shown
        assert "***" in shown


def test_urls_without_credentials_are_kept_exactly():
    for url in ("sqlite:////tmp/a b/optuna.db", "http://127.0.0.1:5000", "journal:///x/journal.log", "no url"):
        assert redact_url(url) == url and redact(url) == url
    assert redact_url("postgresql://qtts@h/db?sslmode=require") == "postgresql://qtts@h/db?sslmode=require"


def test_registry_error_masks_the_tracking_uri():
    from qtts_sweep.production.lookup import registry_not_found

    uri = f"http://qtts:{ENCODED}@mlflow-host:5000"
    err = registry_not_found("models:/qtts-x@production", uri, f"cannot reach {uri}", "/nowhere")
    assert ENCODED not in str(err) and "qtts:***@mlflow-host" in str(err)


def test_check_output_and_checkpoint_config_mask_the_tracking_uri(capsys):
    from qtts_sweep.cli import main
    from qtts_sweep.config.loader import load_config, to_yaml

    override = f"tracking.tracking_uri=http://qtts:{ENCODED}@mlflow-host:5000"
    assert main(["check", "model=tiny", override]) == 0
    out = capsys.readouterr().out
    assert ENCODED not in out and "tracking_uri: http://qtts:***@mlflow-host:5000" in out
    # the checkpoint's config.yaml is this same text (train/loop.py `_save_epoch`)
    assert ENCODED not in to_yaml(load_config(["model=tiny", override]))


def test_checkpoint_config_is_written_with_to_yaml():
    """Every epoch's checkpoint keeps `to_yaml(cfg)` (masked, made once per training run in `_train_epochs`), not
    OmegaConf's own dump of the config."""
    import inspect

    from qtts_sweep.train import loop

    made = inspect.getsource(loop._train_epochs)  # noqa: SLF001 - the one place a checkpoint's config is made
    saved = inspect.getsource(loop._save_epoch)  # noqa: SLF001
    assert "config_yaml = to_yaml(cfg)" in made and "config_yaml=config_yaml" in saved
    assert "OmegaConf.to_yaml" not in made + saved


def test_local_drivers_get_secrets_in_their_environment_not_argv(monkeypatch):
    from qtts_sweep.sweep import launch
    from qtts_sweep.util.urls import SECRET_OVERRIDES_ENV, overrides_from_env

    secret = f"tracking.tracking_uri=http://qtts:{ENCODED}@mlflow-host:5000"
    overrides = ["model=tiny", secret, "train.lr=1e-4"]
    commands = launch.driver_commands("tiny", overrides, 2, devices="cpu,cpu", extra=["eval.max_lines=2"])
    assert len(commands) == 2
    for cmd in commands:
        assert not any(ENCODED in a for a in cmd), cmd
        assert cmd[-3:] == ["model=tiny", "train.lr=1e-4", "eval.max_lines=2"]
    env = launch.driver_env("postgresql://qtts:pw@h/db", overrides)
    monkeypatch.setenv(SECRET_OVERRIDES_ENV, env[SECRET_OVERRIDES_ENV])
    assert overrides_from_env() == [secret]  # what join_study puts back in front of argv's overrides


def test_submitit_job_pickle_holds_no_secret():
    from qtts_sweep.sweep.slurm import worker_job

    secret = f"tracking.tracking_uri=http://qtts:{ENCODED}@mlflow-host:5000"
    job = worker_job("tiny", ["model=tiny", secret], None, 2)
    blob = pickle.dumps(job)
    assert ENCODED.encode() not in blob and b"model=tiny" in blob
