"""Training: only adapters change, checkpoints are reused and resumed bit-exactly, the key covers the config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from qtts_sweep.config.loader import load_config
from qtts_sweep.model import modeling
from qtts_sweep.train.loop import ensure_epoch, resolve_run, validation_loss
from qtts_sweep.train.store import (
    KEY_EXCLUDED,
    Checkpoint,
    CheckpointStore,
    TrainerState,
    config_leaves,
    key_material,
    training_key,
)

FAST = [
    "model=tiny",
    "data=demo",
    "train.lr=3e-3",
    "train.max_epochs=3",
    "train.epochs=3",
    "eval.epoch=3",
    "train.max_steps_per_epoch=3",
    "train.batch_size=4",
]


def _cfg(tmp_path, *extra):
    return load_config([*FAST, f"paths.store_dir={tmp_path / 'store'}", *extra])


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_bit_for_bit(tmp_path):
    straight = _cfg(tmp_path / "a")
    r2 = ensure_epoch(straight, 2, progress=False)
    assert r2.trained == [1, 2]
    resumed = _cfg(tmp_path / "b")
    assert ensure_epoch(resumed, 1, progress=False).trained == [1]
    r = ensure_epoch(resumed, 2, progress=False)
    assert (r.reused, r.trained) == ([1], [2])
    for name in ("adapter.safetensors", "speaker_embedding.safetensors"):
        a, b = load_file(str(r2.checkpoint / name)), load_file(str(r.checkpoint / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    sa = CheckpointStore(tmp_path / "a" / "store").load_epoch(r2.key, 2).trainer_state
    sb = CheckpointStore(tmp_path / "b" / "store").load_epoch(r.key, 2).trainer_state
    assert sa.scheduler == sb.scheduler and sa.optimizer["param_groups"] == sb.optimizer["param_groups"]
    assert sa.optimizer["state"].keys() == sb.optimizer["state"].keys() and sa.optimizer["state"]
    for k, v in sa.optimizer["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(v[name], sb.optimizer["state"][k][name]), (k, name)
    # and asking again trains nothing, reporting stored metrics for every epoch in order
    seen = []
    again = ensure_epoch(resumed, 2, on_epoch=lambda e, m, reused: seen.append((e, m, reused)), progress=False)
    assert (again.trained, again.reused) == ([], [1, 2])
    assert [(e, reused) for e, _, reused in seen] == [(1, True), (2, True)] and "val_loss" in seen[0][1]


@pytest.mark.slow
def test_only_adapter_parameters_change_and_base_is_untouched(tmp_path):
    cfg = _cfg(tmp_path)
    result = ensure_epoch(cfg, 1, progress=False)
    adapter = load_file(str(result.checkpoint / "adapter.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.startswith("talker.code_predictor.") for k in adapter)  # default scope includes it
    assert any(torch.count_nonzero(v) for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it trained
    base = load_file(str(modeling.ensure_model_folder(cfg.model) + "/model.safetensors"))
    loaded = modeling.load_model(cfg.model)
    for k, v in loaded.model.state_dict().items():
        if k in base:
            assert torch.equal(v, base[k]), k  # the base folder is never rewritten


@pytest.mark.slow
def test_talker_only_scope_leaves_code_predictor_alone(tmp_path):
    result = ensure_epoch(_cfg(tmp_path, "lora=talker_only"), 1, progress=False)
    adapter = load_file(str(result.checkpoint / "adapter.safetensors"))
    assert adapter and not any("code_predictor" in k for k in adapter)


@pytest.mark.slow
def test_speaker_embedding_comes_from_the_reference_clip(tmp_path):
    cfg = _cfg(tmp_path)
    result = ensure_epoch(cfg, 1, progress=False)
    saved = load_file(str(result.checkpoint / "speaker_embedding.safetensors"))["spk_embedding"]
    loaded = modeling.load_model(cfg.model)
    run = resolve_run(cfg)
    expected = modeling.speaker_embedding(loaded, modeling.load_audio_24k(run.dataset.ref_audio))
    assert torch.equal(saved, expected)


def test_validation_handles_tiny_sets(tiny_loaded):
    from qtts_sweep.model.loss import Example

    cfg = load_config(FAST)
    spk = torch.zeros(tiny_loaded.model.config.talker_config.hidden_size)
    role, text = modeling.tokenize_line(tiny_loaded.tts, "One line.")
    one = [Example(role, text, torch.randint(0, 2048, (1, 16)), spk)]  # one line of one frame
    metrics = validation_loss(tiny_loaded.model, one, cfg)
    assert metrics["val_loss"] > 0 and 0 <= metrics["val_talker_acc"] <= 1
    assert validation_loss(tiny_loaded.model, [], cfg) == {}


def _mutated(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.01
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else [*value, "x"]
    if value is None:
        return 7
    raise TypeError(value)


def _with_leaf(cfg, dotted: str, value):
    cfg = dataclasses.replace(cfg)
    parts = dotted.split(".")
    parents = [cfg]
    for p in parts[:-1]:
        parents.append(dataclasses.replace(getattr(parents[-1], p)))
    object.__setattr__(parents[-1], parts[-1], value)
    for i in range(len(parts) - 1, 0, -1):
        object.__setattr__(parents[i - 1], parts[i - 1], parents[i])
    return cfg


def test_training_key_changes_with_every_included_leaf_and_no_excluded_one():
    cfg = load_config(["model=tiny"])
    base = training_key(key_material(cfg, "datahash", "refsha", "modelid"))
    leaves = config_leaves(cfg)
    assert len(leaves) >= 30
    for dotted, value in leaves.items():
        changed = _with_leaf(cfg, dotted, _mutated(value))
        assert training_key(key_material(changed, "datahash", "refsha", "modelid")) != base, dotted
    for dotted in KEY_EXCLUDED:
        group, rest = dotted.split(".", 1)
        value = getattr(getattr(cfg, group), rest)
        changed = _with_leaf(cfg, dotted, _mutated(value))
        assert training_key(key_material(changed, "datahash", "refsha", "modelid")) == base, dotted
    for other in (
        ("datahash2", "refsha", "modelid"),
        ("datahash", "refsha2", "modelid"),
        ("datahash", "refsha", "modelid2"),
    ):
        assert training_key(key_material(cfg, *other)) != base
    assert "train.epochs" in KEY_EXCLUDED and "train.max_epochs" in leaves


def _checkpoint(metrics=None) -> Checkpoint:
    return Checkpoint({"a.lora_A.weight": torch.ones(2, 3)}, torch.zeros(4), metrics or {"val_loss": 1.0}, "x: 1\n")


def test_partial_checkpoints_are_never_listed(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save_epoch("k", 1, _checkpoint())
    (tmp_path / "k" / ".epoch-2.tmp-abc").mkdir()  # a crash mid-write
    (tmp_path / "k" / "epoch-3").mkdir()  # no manifest
    assert store.epochs("k") == [1]
    assert store.latest_at_most("k", 5) == 1

    with pytest.raises(TypeError, match="cannot save"):  # fails after some files are written
        store.save_epoch("k", 4, dataclasses.replace(_checkpoint(), trainer_state=TrainerState({}, {}, object(), 4)))
    assert store.epochs("k") == [1] and not (tmp_path / "k" / "epoch-4").exists()


@pytest.mark.slow
def test_cli_train_twice_trains_nothing_the_second_time(tmp_path, capsys):
    from qtts_sweep.cli import main

    args = ["train", *FAST, "train.epochs=2", f"paths.store_dir={tmp_path / 'store'}"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "trained epochs [1, 2] from scratch" in first and "epoch-2" in first
    assert main(args) == 0
    assert "nothing to train: epochs [1, 2] already stored" in capsys.readouterr().out


@pytest.mark.slow
def test_training_on_a_reused_worker_model_equals_a_fresh_process(tmp_path):
    from qtts_sweep.model.lora import apply_lora

    a = _cfg(tmp_path / "reused", "train.lr=1e-3")
    b = _cfg(tmp_path / "reused", "train.lr=3e-3")
    loaded = modeling.load_model(a.model)
    apply_lora(loaded.model, a.lora, seed=a.train.seed)
    ensure_epoch(a, 1, progress=False, loaded=loaded)  # the worker trained another key first
    reused = ensure_epoch(b, 1, progress=False, loaded=loaded)
    fresh = ensure_epoch(_cfg(tmp_path / "fresh", "train.lr=3e-3"), 1, progress=False)
    x = load_file(str(reused.checkpoint / "adapter.safetensors"))
    y = load_file(str(fresh.checkpoint / "adapter.safetensors"))
    assert reused.key == fresh.key and all(torch.equal(x[k], y[k]) for k in y)
