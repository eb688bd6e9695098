"""The per-line evaluation cache on the tiny preset: scoring more lines of a pair synthesizes only the new lines,
and the extended result equals scoring every line from scratch."""

from __future__ import annotations

import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.data.prepare import prepare_dataset
from qtts_sweep.evaluate.scoring import Point, Scorer
from tests.helpers.sweeps import tiny_paths

pytestmark = pytest.mark.slow

CHEAP = [
    "model=tiny",
    "data=demo",
    "eval.max_lines=4",
    "eval.batch_size=2",
    "eval.decoding.frames_per_char=0.3",
    "eval.decoding.min_frames=6",
    "eval.metrics.mos=none",
    "eval.metrics.speaker=none",
]


def test_adding_lines_extends_a_result_instead_of_recomputing_it(tmp_path, tiny_model_dir):
    cfg = load_config([*CHEAP, *tiny_paths(tmp_path, tiny_model_dir)])
    ds = prepare_dataset(cfg, progress=False)
    scorer = Scorer()
    first = scorer.score(cfg, ds, Point.base(), n_lines=2)
    assert first.synthesized == 2 and len(first.per_line) == 2 and not first.cached
    extended = scorer.score(cfg, ds, Point.base(), n_lines=4)
    assert extended.synthesized == 2  # only lines 3 and 4 were generated
    assert [r["id"] for r in extended.per_line[:2]] == [r["id"] for r in first.per_line]
    assert extended.per_line[:2] == first.per_line  # the cached rows themselves
    # the same four lines scored from scratch (no cache at all) give the same rows and objective
    fresh = scorer.score(cfg, ds, Point.base(), use_cache=False)
    assert fresh.synthesized == 4 and fresh.objective == extended.objective
    assert [r["codes"] for r in fresh.per_line] == [r["codes"] for r in extended.per_line]
    # and all four are now cached: a full request synthesizes nothing
    again = scorer.score(cfg, ds, Point.base(), n_lines=4)
    assert again.synthesized == 0 and again.objective == extended.objective
