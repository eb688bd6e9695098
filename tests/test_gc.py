"""`qtts-sweep gc` removes checkpoints no top trial or promotion needs, never a promoted one."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from qtts_sweep.production.gc import collect_garbage
from qtts_sweep.production.promote import promote
from qtts_sweep.sweep.selection import kept_trials
from tests.helpers.sweeps import tiny_sweep

pytestmark = pytest.mark.slow

# Three completed trials on three different checkpoints (two training keys, three (key, epoch) pairs), so the
# promoted one can be chosen off the top and intermediate epochs exist that nothing needs.
POINTS = [
    {"train.lr": 3e-3, "eval.epoch": 2, "eval.lora_scale": 1.0},
    {"train.lr": 3e-3, "eval.epoch": 3, "eval.lora_scale": 0.6},
    {"train.lr": 1e-3, "eval.epoch": 2, "eval.lora_scale": 1.0},
]


def _checkpoints(cfg) -> set[Path]:
    return {p.resolve() for p in Path(cfg.paths.store_dir).glob("*/epoch-*")}


def test_gc_keeps_top_trials_and_promotions_and_frees_the_rest(tmp_path, tiny_model_dir):
    extra = ["eval.max_lines=1", "eval.metrics.speaker=none"]
    driver = tiny_sweep(tmp_path, tiny_model_dir, n_trials=3, extra=extra, pruner="none", enqueue=POINTS)
    driver.run()
    cfg = driver.cfg0
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    top = kept_trials(study, 1)
    top_ckpts = {Path(t.user_attrs["checkpoint"]).resolve() for t in top}
    # a promoted trial that is not a top trial, on a checkpoint no top trial uses
    promoted = next(t for t in done if Path(t.user_attrs["checkpoint"]).resolve() not in top_ckpts)
    promote(cfg, "tiny", storage, trial_number=promoted.number)
    needed = top_ckpts | {Path(promoted.user_attrs["checkpoint"]).resolve()}
    before = _checkpoints(cfg)
    assert before - needed, "the sweep left no checkpoint that gc may remove"
    result = collect_garbage(cfg, storage, keep_top=1)
    after = _checkpoints(cfg)
    assert needed <= after
    assert after == needed and {p.resolve() for p in result.removed} == before - needed
    assert result.freed_bytes > 0


def test_gc_keeps_the_whole_pareto_front_of_a_multi_objective_study(tmp_path, tiny_model_dir):
    extra = ["model=tiny", "train.max_epochs=10", "train.epochs=10", "eval.epoch=10", "train.max_steps_per_epoch=1"]
    driver = tiny_sweep(tmp_path, tiny_model_dir, name="pareto", n_trials=3, extra=[*extra, "eval.max_lines=1"])
    driver.run()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="pareto", storage=storage)
    front = study.best_trials or [t for t in study.trials if t.state.name == "COMPLETE"]
    assert front, "no trial completed"
    front_ckpts = {Path(t.user_attrs["checkpoint"]).resolve() for t in front}
    before = _checkpoints(driver.cfg0)
    result = collect_garbage(driver.cfg0, storage, keep_top=1)
    after = _checkpoints(driver.cfg0)
    assert front_ckpts <= after and after == front_ckpts
    assert {p.resolve() for p in result.removed} == before - front_ckpts
