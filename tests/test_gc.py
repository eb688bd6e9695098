"""`qtts-sweep gc` removes checkpoints no top trial or promotion needs, never a promoted one."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtts_sweep.production.gc import collect_garbage
from qtts_sweep.production.promote import promote
from tests.conftest import tiny_sweep


@pytest.mark.slow
def test_gc_keeps_top_trials_and_promotions_and_frees_the_rest(tmp_path, tiny_model_dir):
    driver = tiny_sweep(
        tmp_path, tiny_model_dir, n_trials=4, extra=["eval.max_lines=1", "eval.metrics.speaker=none"], pruner="none"
    )
    driver.run()
    cfg = driver.cfg0
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    import optuna

    study = optuna.load_study(study_name="tiny", storage=storage)
    worst = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    promote(cfg, "tiny", storage, trial_number=worst.number)  # a promoted checkpoint that is not a top-1 trial
    before = sorted(Path(cfg.paths.store_dir).glob("*/epoch-*"))
    result = collect_garbage(cfg, storage, keep_top=1)
    after = sorted(Path(cfg.paths.store_dir).glob("*/epoch-*"))
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert Path(best.user_attrs["checkpoint"]) in after
    assert Path(worst.user_attrs["checkpoint"]) in after
    assert result.removed and result.freed_bytes > 0
    assert len(after) == len(before) - len(result.removed)
    assert not any(p.exists() for p in result.removed)
