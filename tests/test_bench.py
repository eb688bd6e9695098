"""The benchmarks run end to end and end with a parseable `ratio:` line (their numbers are not asserted)."""

from __future__ import annotations

import pytest

from qtts_sweep.tools import bench


@pytest.mark.slow
def test_bench_train_runs_both_variants(capsys):
    ratio = bench.bench_train(shape="tiny", steps=2, frames=8, text_len=5)
    out = capsys.readouterr().out
    assert "ours" in out and "upstream" in out
    assert out.strip().splitlines()[-1] == f"ratio: {ratio:.3f}" and ratio > 0


@pytest.mark.slow
def test_bench_prep_runs_first_and_cached(capsys):
    ratio = bench.bench_prep([], repeats=1)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("ratio: ") and 0 < ratio < 1


@pytest.mark.slow
def test_bench_synth_gives_identical_codes_batched_and_one_by_one(capsys):
    ratio = bench.bench_synth(n_lines=3, overfit_steps=60, repeats=1)
    out = capsys.readouterr().out
    assert "identical greedy codes batched vs one-by-one: True" in out and "metric cost" in out
    assert out.strip().splitlines()[-1] == f"ratio: {ratio:.3f}"
