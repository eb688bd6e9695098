"""The checkpoint store and the evaluation cache on real files: no pickle is ever loaded, every file is checked
against the sha256 manifest written at save time, a damaged entry is moved aside and recomputed, written files
respect the umask and are never world-writable, and the model identity covers every byte of big weight files."""

from __future__ import annotations

import builtins
import json
import os
import shutil
import stat

import pytest
import torch

from qtts_sweep.config.loader import load_config
from qtts_sweep.train.loop import ensure_epoch
from qtts_sweep.train.store import (
    Checkpoint,
    CheckpointStore,
    CorruptEntry,
    TrainerState,
    model_identity,
    read_adapter,
    read_speaker_embedding,
)
from qtts_sweep.util.integrity import MANIFEST, sha256_bytes
from tests.helpers.sweeps import CHEAP

FAST = [
    "model=tiny",
    "data=demo",
    "train.lr=3e-3",
    "train.max_epochs=3",
    "train.epochs=3",
    "eval.epoch=3",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
]


def _cfg(tmp_path):
    return load_config([*FAST, f"paths.store_dir={tmp_path / 'store'}"])


def _small(epoch: int = 1) -> Checkpoint:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = TrainerState(opt.state_dict(), {"last_epoch": 1, "lr_lambdas": [{}]}, torch.get_rng_state(), epoch)
    return Checkpoint(
        {"x.lora_A.weight": torch.arange(6.0).reshape(2, 3)}, torch.ones(4), {"val_loss": 0.5}, "a: 1\n", state
    )


def _rewrite_manifest(folder):
    """What someone who can write into the store can do: make the manifest match planted files."""
    body = json.loads((folder / MANIFEST).read_text())
    for p in folder.iterdir():
        if p.is_file() and p.name != MANIFEST:
            data = p.read_bytes()
            body["files"][p.name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    (folder / MANIFEST).write_text(json.dumps(body))


class _Plant:
    """Unpickling this creates a file: the stand-in for arbitrary code run by `torch.load(weights_only=False)`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_save_load_round_trip_keeps_every_field_and_optimizer_indices(tmp_path):
    store = CheckpointStore(tmp_path)
    saved = _small()
    store.save_epoch("k", 1, saved)
    got = store.load_epoch("k", 1)
    assert torch.equal(got.adapter["x.lora_A.weight"], saved.adapter["x.lora_A.weight"])
    assert torch.equal(got.speaker_embedding, saved.speaker_embedding)
    assert (got.metrics, got.config_yaml) == (saved.metrics, saved.config_yaml)
    st, want = got.trainer_state, saved.trainer_state
    assert list(st.optimizer["state"]) == [0]  # int keys: load_state_dict matches state by parameter index
    assert st.optimizer["param_groups"] == want.optimizer["param_groups"]  # betas stays a tuple, floats exact
    assert isinstance(st.optimizer["param_groups"][0]["betas"], tuple)
    for name, value in want.optimizer["state"][0].items():
        assert torch.equal(st.optimizer["state"][0][name], value), name
    assert st.scheduler == want.scheduler and torch.equal(st.rng, want.rng) and st.epoch == 1
    assert not list((tmp_path / "k" / "epoch-1").glob("*.pt"))  # nothing pickled
    assert store.load_metrics("k", 1) == {"val_loss": 0.5}
    assert torch.equal(read_adapter(store.epoch_dir("k", 1))["x.lora_A.weight"], saved.adapter["x.lora_A.weight"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "directory"])
def test_a_damaged_file_is_named_and_its_epoch_moved_aside(tmp_path, damage):
    store = CheckpointStore(tmp_path)
    store.save_epoch("k", 1, _small())
    store.save_epoch("k", 2, _small(2))
    target = store.epoch_dir("k", 2) / "adapter.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit: only the sha256 sees it
    elif damage == "delete":
        target.unlink()
    else:
        target.unlink()
        target.mkdir()  # unreadable as a file, also for root
    with pytest.raises(CorruptEntry) as err:
        read_adapter(store.epoch_dir("k", 2))  # the path the synthesizer takes
    assert err.value.path == target and str(target) in str(err.value)
    assert err.value.moved_to is not None and err.value.moved_to.name.startswith("epoch-2.corrupt-")
    assert (err.value.moved_to / "adapter.safetensors").exists() or damage == "delete"  # kept for inspection
    assert store.epochs("k") == [1] and store.latest_at_most("k", 2) == 1  # missing now: recomputed next time
    store.verify("k", 1)


def test_a_damaged_trainer_state_or_manifest_fails_its_own_load(tmp_path):
    store = CheckpointStore(tmp_path)
    for e, name in ((1, "trainer_state.safetensors"), (2, "trainer_state.json"), (3, MANIFEST)):
        store.save_epoch("k", e, _small(e))
        path = store.epoch_dir("k", e) / name
        path.write_bytes(path.read_bytes()[:10])
        with pytest.raises(CorruptEntry, match=str(path)):
            store.load_epoch("k", e)
    assert store.epochs("k") == []
    assert len(list((tmp_path / "k").glob("epoch-*.corrupt-*"))) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["trainer_state.safetensors", "trainer_state.json"])
def test_a_planted_pickle_is_never_unpickled(tmp_path, capsys, name):
    cfg = _cfg(tmp_path)
    first = ensure_epoch(cfg, 1, progress=False)
    probe, marker = tmp_path / "probe", tmp_path / "marker"
    payload = tmp_path / "payload.pt"
    torch.save({"optimizer": _Plant(probe)}, payload)
    torch.load(payload, weights_only=False)  # the plant is live: the old loader would have run it
    assert probe.exists()
    torch.save({"optimizer": _Plant(marker)}, payload)
    folder = first.checkpoint
    shutil.copy(payload, folder / name)
    shutil.copy(payload, folder / "trainer_state.pt")  # the old file name, too: never opened
    _rewrite_manifest(folder)
    again = ensure_epoch(cfg, 2, progress=False)
    assert not marker.exists()
    err = capsys.readouterr().err
    assert str(folder / name) in err and "Fix:" in err and "moved aside" in err
    assert again.trained == [1, 2]  # epoch 1 was set aside and retrained, then epoch 2
    moved = list(folder.parent.glob("epoch-1.corrupt-*"))
    assert len(moved) == 1 and (moved[0] / "trainer_state.pt").exists()


@pytest.mark.slow
def test_a_truncated_checkpoint_is_recomputed_to_the_same_bytes(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    ensure_epoch(cfg, 2, progress=False)
    store = CheckpointStore(cfg.paths.store_dir)
    r = ensure_epoch(cfg, 2, progress=False)
    original = read_adapter(r.checkpoint)  # a copy: load_file's mmap would fault (SIGBUS) once truncated
    adapter = r.checkpoint / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])  # the requested epoch itself
    state = store.epoch_dir(r.key, 1) / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:-7])  # and the epoch it would resume from
    again = ensure_epoch(cfg, 2, progress=False)
    err = capsys.readouterr().err
    assert str(adapter) in err and str(state) in err
    assert again.trained == [1, 2] and store.epochs(r.key) == [1, 2]
    recomputed = read_adapter(again.checkpoint)
    assert recomputed.keys() == original.keys() and all(torch.equal(recomputed[k], original[k]) for k in original)
    assert read_speaker_embedding(again.checkpoint).ndim == 1


@pytest.mark.slow
def test_a_damaged_evaluation_cache_entry_is_moved_aside_and_recomputed(runs_dir, capsys):
    from qtts_sweep.evaluate.synth_command import run_synth

    # a decoding seed no other test uses: this test's cache entry is its own
    cfg = load_config([*FAST, *CHEAP, "eval.metrics.speaker=none", "eval.decoding.seed=424242"])
    evals = runs_dir / "evals"
    before = set(evals.iterdir()) if evals.is_dir() else set()
    first = run_synth(cfg, use_base=True)
    assert "(cached)" in run_synth(cfg, use_base=True)
    (entry,) = {
        p for p in set(evals.iterdir()) - before if not p.name.startswith(("ceiling-", "lines-"))
    }  # the codec ceiling and the per-line cache have their own entries
    for victim in (sorted((entry / "wavs").iterdir())[0], entry / "result.json"):
        victim.write_bytes(victim.read_bytes()[:50])
        out = run_synth(cfg, use_base=True)
        assert "(cached)" not in out and out.splitlines()[1] == first.splitlines()[1]  # same objective
        err = capsys.readouterr().err
        assert str(victim) in err and "recomputed" in err
        assert "(cached)" in run_synth(cfg, use_base=True)
    assert len(list(evals.glob(f"{entry.name}.corrupt-*"))) == 2


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_written_files_respect_the_umask_and_are_never_world_writable(tmp_path, umask):
    old = os.umask(umask)
    try:
        store = CheckpointStore(tmp_path / "store")
        store.write_material("k", {"a": 1})
        store.save_epoch("k", 1, _small())
    finally:
        os.umask(old)
    mask = umask | stat.S_IWOTH
    paths = [store.key_dir("k"), *store.key_dir("k").rglob("*")]
    assert len(paths) >= 9
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~mask, (p, oct(mode))


def test_a_store_writable_by_others_is_reported_once_with_the_fix(tmp_path, capsys):
    root = tmp_path / "shared-store"
    root.mkdir()
    store = CheckpointStore(root)
    store.save_epoch("k", 1, _small())
    assert "writable" not in capsys.readouterr().err
    root.chmod(0o777)
    store.save_epoch("k", 2, _small(2))
    store.write_material("k", {})
    CheckpointStore(root).save_epoch("k", 3, _small(3))
    err = capsys.readouterr().err
    assert err.count("writable by every user") == 1 and f"chmod o-w {root}" in err


def test_model_identity_hashes_every_byte_of_big_files_and_caches_the_digest(tmp_path, tiny_model_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_model_dir, a)
    shutil.copytree(tiny_model_dir, b)
    weights = max(a.rglob("*.safetensors"), key=lambda p: p.stat().st_size)
    size = weights.stat().st_size
    assert size > 2 * 2**20 + 4096  # the middle byte is outside the first and last MiB
    twin = b / weights.relative_to(a)
    data = bytearray(twin.read_bytes())
    data[size // 2] ^= 0xFF
    twin.write_bytes(bytes(data))
    cache = tmp_path / "digests.json"
    limit = 2**20  # the tiny weights now take the big-file path
    ida, idb = model_identity(str(a), limit, cache), model_identity(str(b), limit, cache)
    assert ida != idb
    assert model_identity(str(a), 64 * 2**20, cache) == ida  # same digest as the small-file path
    entries = json.loads(cache.read_text())
    assert any(k.startswith(f"{weights.resolve()}\0{size}\0") for k in entries)
    # a cached digest is used while (path, size, mtime) holds, and dropped when the file changes
    stamp = os.stat(twin).st_mtime_ns
    twin.write_bytes(weights.read_bytes())
    os.utime(twin, ns=(stamp, stamp))
    assert model_identity(str(b), limit, cache) == idb
    os.utime(twin, ns=(stamp + 10**9, stamp + 10**9))
    assert model_identity(str(b), limit, cache) == ida
