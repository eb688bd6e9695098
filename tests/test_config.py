"""Config tree: every shipped file composes and validates; every problem is reported at once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from qtts_sweep.cli import main
from qtts_sweep.config.loader import CONF_DIR
from qtts_sweep.config.loader import load_config as _load_config
from qtts_sweep.config.schema import ConfigError, LoraConfig, TrainConfig

GROUPS = ["model", "data", "lora", "train", "eval", "tracking", "paths", "experiment", "debug"]


# Options that need a value only the user can give (their dataset); composed with that value supplied.
def load_config(overrides=(), config_dir=None):
    """Composition and rules only: the shipped hub models are not in a test machine's offline cache (the
    model-source check has its own tests in tests/test_check_errors.py)."""
    return _load_config(overrides, config_dir, check_model=False)


NEEDS = {"data/jsonl": ["data.manifest=/tmp/m.jsonl"], "data/ljspeech": ["data.root=/tmp/lj"]}


def _shipped() -> list[tuple[str, str]]:
    found = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
    assert len(found) >= 14, found
    return found


@pytest.mark.parametrize(("group", "option"), _shipped())
def test_every_shipped_config_file_composes_and_validates(group, option):
    cfg = load_config([f"{group}={option}", *NEEDS.get(f"{group}/{option}", [])])
    assert cfg.train.lr > 0
    assert Path(cfg.paths.runs_dir).is_absolute()


def test_defaults_are_the_documented_seed_values():
    cfg = load_config()
    assert cfg.model.source == "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
    assert cfg.train.lr == 2e-6
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32.0, 0.05)
    assert cfg.lora.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert cfg.lora.scope == "talker_and_code_predictor"
    assert load_config(["lora=talker_only"]).lora.scope == "talker"
    assert cfg.tracking.tracking_uri.startswith("sqlite:///") and cfg.tracking.tracking_uri.endswith("mlflow.db")
    assert cfg.data.sample_rate == 24000


def test_tiny_experiment_uses_a_learning_rate_where_a_tiny_model_learns():
    cfg = load_config(["experiment=tiny_demo"])
    assert cfg.model.tiny and 1e-4 <= cfg.train.lr <= 1e-2


def test_all_problems_are_reported_at_once_with_key_value_rule_and_fix():
    with pytest.raises(ConfigError) as err:
        load_config(["train.lr=-1", "lora.r=0", "lora.dropout=1.5", "eval.decoding.top_p=2"])
    keys = [p.key for p in err.value.problems]
    assert keys == ["lora.r", "lora.dropout", "train.lr", "eval.decoding.top_p"]
    text = str(err.value)
    assert "`train.lr` = -1.0" in text and "must be > 0" in text and "Fix:" in text


def test_type_errors_and_rule_errors_in_several_groups():
    with pytest.raises(ConfigError) as err:
        load_config(["train.lr=abc", "train.batch_size=2.5", "model.dtype=fp8", "eval.split=dev"])
    keys = sorted(p.key for p in err.value.problems)
    assert keys == ["eval.split", "model.dtype", "train.batch_size", "train.lr"]


def test_unknown_keys_are_all_reported_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(["train.lrr=1", "lora.alpah=3"])
    fixes = {p.key: p.fix for p in err.value.problems}
    assert fixes == {"train.lrr": "did you mean `train.lr`?", "lora.alpah": "did you mean `lora.alpha`?"}


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        load_config(["model=qwen3_tts_7b"])
    assert "tiny" in err.value.problems[0].fix and "qwen3_tts_1.7b_base" in err.value.problems[0].fix


def test_cross_group_rule_eval_epoch_within_horizon():
    with pytest.raises(ConfigError) as err:
        load_config(["train.max_epochs=5", "train.epochs=5", "eval.epoch=8"])
    assert [p.key for p in err.value.problems] == ["eval.epoch"]


def test_schema_objects_cannot_be_built_invalid():
    with pytest.raises(ConfigError) as err:
        TrainConfig(lr=0.0, epochs=20, max_epochs=10)
    assert sorted(p.key for p in err.value.problems) == ["train.epochs", "train.lr"]
    with pytest.raises(ConfigError):
        LoraConfig(target_modules=["qkv"])
    assert dataclasses.asdict(LoraConfig())["r"] == 16


def test_a_value_is_checked_against_its_field_the_same_way_in_yaml_and_in_code():
    """One check (schema.value_problems) of type and choices: the composed YAML gets it from the loader, a schema
    object built in code (dataclasses.replace, a trial's config) from its own construction."""
    cfg = load_config(["model=tiny"])
    with pytest.raises(ConfigError) as err:
        load_config(["model=tiny", "model.dtype=float64", "train.epochs=1.5"])
    from_yaml = {(p.key, p.rule) for p in err.value.problems}
    in_code = set()
    for section, change in ((cfg.model, {"dtype": "float64"}), (cfg.train, {"epochs": 1.5})):
        with pytest.raises(ConfigError) as err:
            dataclasses.replace(section, **change)
        in_code |= {(p.key, p.rule) for p in err.value.problems}
    assert (
        in_code
        == from_yaml
        == {
            ("model.dtype", "must be one of ['auto', 'float32', 'bfloat16', 'float16']"),
            ("train.epochs", "must be of type int"),
        }
    )
    with pytest.raises(ConfigError, match=r"eval\.decoding\.mode"):  # a nested section: its group reports it
        dataclasses.replace(cfg.eval, decoding=dataclasses.replace(cfg.eval.decoding, mode="beam"))


def test_user_config_dir_adds_data_and_experiment(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "myvoice.yaml").write_text(
        "name: myvoice\nformat: ljspeech\nroot: /srv/voices/me\nref_audio: null\n"
    )
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: myvoice\ntrain:\n  lr: 5.0e-6\n"
    )
    cfg = load_config(["experiment=mine"], config_dir=tmp_path)
    assert (cfg.data.name, cfg.data.root, cfg.train.lr) == ("myvoice", "/srv/voices/me", 5e-6)
    with pytest.raises(ConfigError):
        load_config(["experiment=mine"])  # not visible without --config-dir


def test_cli_check_exits_2_naming_both_keys(capsys):
    assert main(["check", "train.lr=-1", "lora.r=0"]) == 2
    err = capsys.readouterr().err
    assert "`train.lr`" in err and "`lora.r`" in err


def test_cli_check_prints_resolved_config(capsys):
    assert main(["check", "model=tiny", "train.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0001" in out and "tiny: true" in out and "${" not in out


def test_help_and_check_import_neither_torch_nor_transformers():
    code = (
        "import sys, contextlib, io\n"
        "from qtts_sweep.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "    main(['check', 'model=tiny'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'qwen_tts', 'mlflow', 'optuna') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_configured_metric_backend_without_local_weights_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(["eval.metrics.asr_backend=whisper", f"eval.metrics.asr_model_path={tmp_path / 'missing'}"])
    assert [p.key for p in err.value.problems] == ["eval.metrics.asr_model_path"]
    from qtts_sweep.metrics.asr import MetricBackendError, load_asr, word_error_rate

    with pytest.raises(MetricBackendError, match="cannot load Whisper"):
        load_asr("whisper", str(tmp_path), "cpu")  # an existing folder that holds no model
    assert word_error_rate("The cat sat.", "the cat sat") == 0.0
    assert word_error_rate("the cat sat", "the dog sat down") == 2 / 3
