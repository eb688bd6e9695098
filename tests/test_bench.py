"""Every `qtts-sweep bench` subcommand runs end to end on the tiny preset at smoke-test sizes and ends with a
parseable `ratio: <number>` line (the numbers themselves are not asserted: at these sizes they mean nothing)."""

from __future__ import annotations

import json
import re

import pytest

from qtts_sweep.tools import bench
from tests.helpers.sweeps import DEMO_DIR

pytestmark = pytest.mark.slow

RATIO = re.compile(r"ratio: (\d+\.\d+|nan|inf)")


def _breakdown(out: str) -> dict[str, list[float]]:
    """The breakdown table's rows: label -> seconds per compared run (checks every phase row is there)."""
    from qtts_sweep.sweep.phases import PHASES

    lines = out.splitlines()
    start = lines.index("where the time goes (s, % of wall):")
    rows = {}
    for line in lines[start + 2 :]:
        cells = re.findall(r"(-?\d+\.\d+) s +(-?\d+\.\d+)%", line)
        if not cells:
            break
        rows[line[: line.index(cells[0][0])].strip()] = [float(sec) for sec, _ in cells]
    assert set(PHASES.values()) | {"other (unaccounted)", "wall"} == set(rows), rows.keys()
    return rows


def _assert_parts_within_wall(out: str, columns: int) -> dict[str, list[float]]:
    rows = _breakdown(out)
    assert all(len(v) == columns for v in rows.values())
    for i, wall in enumerate(rows["wall"]):
        parts = sum(v[i] for k, v in rows.items() if k not in ("wall", "other (unaccounted)"))
        assert 0 < parts <= wall + 0.02, f"column {i}: phases {parts:.2f} s > wall {wall:.2f} s"
        assert rows["other (unaccounted)"][i] >= -0.02
    return rows


def _last_ratio(out: str) -> float:
    last = out.strip().splitlines()[-1]
    match = RATIO.fullmatch(last)
    assert match, f"last line is not `ratio: <number>`: {last!r}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> list[str]:
    """Overrides for a 12-line slice of the demo data (4 train / 4 val / 4 test lines), so preparing it is cheap."""
    folder = tmp_path_factory.mktemp("small-data")
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()[:12]]
    for row in rows:
        row["audio"] = str(DEMO_DIR / row["audio"])
        row["ref_audio"] = str(DEMO_DIR / row["ref_audio"])
    manifest = folder / "small.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"data.manifest={manifest}", "data.name=small"]


def test_bench_prep(capsys, small_data):
    ratio = bench.bench_prep(small_data, repeats=1)
    out = capsys.readouterr().out
    assert "median first" in out and "median cached" in out
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3) and 0 < ratio < 1


def test_bench_train_prints_a_ratio_per_batch_size(capsys):
    ratio = bench.bench_train(shape="tiny", batch_sizes=(1, 2), steps=2, frames=8, text_len=5)
    out = capsys.readouterr().out
    assert "batch 1: ours / double-shift = " in out and "batch 2: ours / double-shift = " in out
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3) and ratio > 0


def test_bench_synth_gives_identical_codes_batched_and_one_by_one(capsys, small_data):
    ratio = bench.bench_synth(n_lines=3, overfit_steps=60, repeats=1, overrides=small_data)
    out = capsys.readouterr().out
    assert "identical greedy codes batched vs one-by-one: True" in out and "metric cost" in out
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3)


def test_bench_sweep_prints_both_ratios_reuse_alone_last(capsys, small_data):
    cheap = [*small_data, "train.max_steps_per_epoch=1", "eval.max_lines=1", "eval.metrics.speaker=none"]
    ratio = bench.bench_sweep(n_trials=3, overrides=cheap)
    out = capsys.readouterr().out
    assert "(a) reuse, warm worker" in out and "(b) no reuse, model per trial" in out
    assert "reuse + warm worker: a/b = " in out
    rows = _assert_parts_within_wall(out, columns=3)
    a, c, b = (i for i in range(3))
    assert rows["training"][a] > 0 and rows["evaluation (synthesis + scoring)"][c] > 0
    # (b) loads the model per trial, (c) once: both columns measure it (which is larger is the bench's to print,
    # not this test's: a tiny model loads in a fraction of a second, and (c)'s one load carries first-use costs)
    assert rows["model load"][b] > 0 and rows["model load"][c] > 0
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3) and ratio > 0


def test_bench_workers(capsys, small_data):
    cheap = [*small_data, "train.max_steps_per_epoch=1", "eval.max_lines=1", "eval.metrics.speaker=none"]
    ratio = bench.bench_workers(cheap, n_trials=2)
    out = capsys.readouterr().out
    assert "1 worker(s): 2 trials" in out and "2 worker(s): 2 trials" in out
    rows = _assert_parts_within_wall(out, columns=2)
    assert all(s > 0 for s in rows["storage (Optuna calls, journal lock)"])
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3) and ratio > 0


def test_bench_search_simulation_compares_four_strategies_and_ends_with_d_over_a(capsys):
    from qtts_sweep.tools.bench_search import STRATEGIES, bench_search

    ratio = bench_search(seeds=1)
    out = capsys.readouterr().out
    assert out.startswith("SIMULATION") and "cost model" in out
    for k in STRATEGIES:
        assert f"({k}) {STRATEGIES[k]}" in out and "within noise of the best" in out
    assert "(d)/(c) synthesis cost:" in out
    assert _last_ratio(out) == pytest.approx(ratio, abs=1e-3) and 0 < ratio < 1


def test_bench_search_real_runs_c_and_d_on_the_tiny_preset(capsys):
    from qtts_sweep.tools.bench_search import real_comparison

    out_runs = real_comparison(["eval.max_lines=4", "data.split.min_val=4"], n_trials=3, min_lines=2, step=2)
    out = capsys.readouterr().out
    assert "real tiny preset (c)" in out and "real tiny preset (d)" in out and "(d)/(c): lines" in out
    lines_c, _, outcome_c = out_runs["c"]
    assert outcome_c.completed == 3 and outcome_c.pruned == 0 and 4 < lines_c <= 4 * 4  # trials + the base model
    lines_d, _, outcome_d = out_runs["d"]
    assert outcome_d.completed + outcome_d.pruned == 3 and 4 < lines_d <= 4 * 4
