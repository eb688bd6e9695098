"""Wrong input ends in one `problem + fix` message, never a traceback: config types and rules together, the model
source (local folder, offline hub cache, flash-attn), and every command given a study, trial, bundle or registry
URI that does not exist."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.config.model_source import hub_error, hub_error_message
from qtts_sweep.config.schema import ConfigError
from tests.helpers.sweeps import PROJECT_DIR

HUB_ID = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"


def _keys(err: pytest.ExceptionInfo) -> dict[str, str]:
    return {p.key: p.rule for p in err.value.problems}


def test_type_and_value_errors_are_reported_in_one_run():
    with pytest.raises(ConfigError) as err:
        load_config(["model=tiny", "eval.lora_scale=-1", "eval.epoch=99", "train.lr=abc", "lora.r=0"])
    keys = _keys(err)
    assert "must be of type float" in keys["train.lr"]
    assert "[0, 2]" in keys["eval.lora_scale"]
    assert "train.max_epochs" in keys["eval.epoch"]
    assert "rank" in keys["lora.r"]
    assert len(keys) == 4  # the bad lr is checked at its default, so no rule error is invented for it


def test_a_type_error_in_a_group_does_not_hide_a_rule_error_in_the_same_group():
    with pytest.raises(ConfigError) as err:
        load_config(["model=tiny", "train.lr=abc", "train.max_epochs=0"])
    assert set(_keys(err)) >= {"train.lr", "train.max_epochs"}


def test_a_missing_local_model_folder_is_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config([f"model.source={tmp_path / 'nonexistent' / 'folder'}"])
    (problem,) = err.value.problems
    assert problem.key == "model.source" and "neither an existing model folder" in problem.rule
    assert "config.json" in problem.fix


def test_a_folder_without_the_model_files_lists_what_is_missing(tmp_path, tiny_model_dir):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    shutil.rmtree(partial / "speech_tokenizer")
    (partial / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        load_config([f"model.source={partial}"])
    (problem,) = err.value.problems
    assert "speech_tokenizer/config.json" in problem.rule and "safetensors" in problem.rule
    assert "config.json," not in problem.rule.split("without", 1)[1][:13]  # config.json itself is there
    assert load_config([f"model.source={tiny_model_dir}", "model.local_files_only=true"]).model.source


def _hub_cache_with(cache, repo_id: str, folder) -> None:
    """The layout huggingface_hub's own downloads leave: refs/main names a snapshot holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))


def test_an_uncached_hub_id_offline_names_the_id_the_cache_and_the_fixes(tmp_path, monkeypatch, tiny_model_dir):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        load_config([])
    (problem,) = err.value.problems
    assert problem.value == HUB_ID and str(tmp_path / "hub") in problem.rule and "HF_HUB_OFFLINE=1" in problem.rule
    assert f"hf download {HUB_ID}" in problem.fix and "model.source=/local/folder" in problem.fix
    assert "model.local_files_only=true" in problem.fix
    # local_files_only alone counts as offline too
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ConfigError, match="model.local_files_only=true"):
        load_config(["model.local_files_only=true"])
    # the same id, once in the cache, passes the check without any network call
    _hub_cache_with(tmp_path / "hub", HUB_ID, tiny_model_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_config([]).model.source == HUB_ID


def test_the_tiny_preset_is_not_checked_since_it_is_made_on_first_use(tmp_path):
    cfg = load_config(["model=tiny", "model.tiny_seed=7", f"paths.models_dir={tmp_path}"])
    assert not (tmp_path / "tiny-seed7").exists() and cfg.model.tiny


def test_flash_attention_without_its_package_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        load_config(["model=tiny", "model.attn_implementation=flash_attention_2"])
    (problem,) = err.value.problems
    if importlib.util.find_spec("flash_attn") is None:
        assert "flash-attn package" in problem.rule and "model.attn_implementation=auto" in problem.fix
    else:  # model=tiny runs on the CPU
        assert "CUDA only" in problem.rule


def test_a_hub_error_at_load_time_becomes_one_message(tmp_path):
    from huggingface_hub import hf_hub_download

    try:
        try:
            hf_hub_download("nobody/no-such-model", "config.json", cache_dir=tmp_path, local_files_only=True)
        except Exception as inner:
            raise OSError("transformers-style wrapper") from inner
    except OSError as exc:
        hub = hub_error(exc)
    assert hub is not None and type(hub).__module__.startswith("huggingface_hub")
    text = hub_error_message(hub)
    assert "hf download" in text and "model.source=/local/folder" in text and "\n" in text


# ------------------------------------------------------------------------------------------------ wrong names


@pytest.fixture(scope="module")
def runs_with_a_study(tmp_path_factory):
    """A runs/ folder whose Optuna storage holds one real study, `real`, with one COMPLETE trial."""
    import optuna

    runs = tmp_path_factory.mktemp("wrong-names")
    study = optuna.create_study(study_name="real", storage=f"sqlite:///{runs / 'optuna.db'}", direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    return runs


def _cli(runs, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QTTS_RUNS_DIR": str(runs), "PYTHONPATH": str(PROJECT_DIR), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "qtts_sweep.cli", *args],  # the default hub model, never cached here: not in the way
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_DIR,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["report", "nosuchstudy"], "real"),
        (["promote", "nosuchstudy"], "real"),
        (["promote", "real", "--trial", "99"], "no such trial"),
        (["gc", "--storage", "sqlite:///{runs}/missing.db"], "no Optuna storage"),
        (["report", "real", "--storage", "journal:{runs}/missing.log"], "no Optuna storage"),
        (["export", "nosuchbundle", "--out", "{runs}/exported"], "no bundle in"),
        (["synth", "--production", "{runs}/production/nosuch", "--text", "Hi."], "no bundle in"),
        (["synth", "--production", "models:/qtts-nosuch@production", "--text", "Hi."], "MLflow registry"),
        (["check", "model.source={runs}/no/such/model"], "neither an existing model folder"),
    ],
)
def test_every_command_given_a_wrong_name_exits_2_with_what_exists(runs_with_a_study, args, expect):
    proc = _cli(runs_with_a_study, *[a.format(runs=runs_with_a_study) for a in args])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and expect in out, out
    assert not (runs_with_a_study / "missing.db").exists()  # a wrong URL creates nothing
