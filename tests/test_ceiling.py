"""The codec ceiling on the tiny preset: the ground truth's own codec round trip, scored like a generation, cached,
carried by every result, and the reference of the quality terms under `eval.objective.reference: ceiling`.

The tiny preset's codec is random, so its round trip is far from the recording: the ceiling is a real, imperfect
reference here, which is what makes the two reference modes differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.data.prepare import prepare_dataset
from qtts_sweep.evaluate.scoring import CEILING_PREFIX, Point, Scorer
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import CEILING_FLOOR, ObjectiveWeights, composite_score, line_scores
from tests.helpers.sweeps import tiny_paths

CHEAP = [
    "model=tiny",
    "data=demo",
    "eval.max_lines=2",
    "eval.batch_size=2",
    "eval.decoding.frames_per_char=0.3",
    "eval.decoding.min_frames=6",
    "eval.metrics.mos=none",
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir):
    runs = tmp_path_factory.mktemp("ceiling")
    base = [*CHEAP, *tiny_paths(runs, tiny_model_dir)]
    cfg_c = load_config([*base, "eval.objective.reference=ceiling"])
    cfg_g = load_config([*base, "eval.objective.reference=ground_truth"])
    ds = prepare_dataset(cfg_c, progress=False)
    scorer = Scorer()
    return runs, cfg_c, cfg_g, ds, scorer, scorer.score(cfg_c, ds, Point.base()), scorer.score(cfg_g, ds, Point.base())


def test_every_result_carries_the_ceiling_beside_its_own_metrics(scored):
    runs, _, _, _, _, ev_c, ev_g = scored
    for ev in (ev_c, ev_g):
        assert ev.ceiling is not None and len(ev.ceiling["per_line"]) == 2
        for key in ("mcd_db", "spk_sim", "f0_error", "duration_error"):
            assert ev.summary[CEILING_PREFIX + key] == ev.ceiling["summary"][key]
        saved = json.loads((ev.dir / "result.json").read_text())
        assert saved["ceiling"]["key"] == ev.ceiling["key"]
        for row in ev.ceiling["per_line"]:
            assert (Path(ev.ceiling["dir"]) / row["wav"]).is_file()  # the listening page's "codec ceiling" clip
    # one ceiling for both modes: it depends on data, codec and metric settings, not on the objective
    assert ev_c.ceiling["key"] == ev_g.ceiling["key"] and ev_c.key != ev_g.key
    assert len(list((runs / "evals").glob("ceiling-*"))) == 1
    # a random codec: its round trip is far from the recording (MCD well above a real codec's ~2-4 dB)
    assert ev_c.ceiling["summary"]["mcd_db"] > 5.0


def test_the_ceiling_is_computed_once_and_reused(scored):
    _, cfg_c, _, ds, scorer, ev_c, _ = scored
    wav = Path(ev_c.ceiling["dir"]) / ev_c.ceiling["per_line"][0]["wav"]
    before = wav.stat().st_mtime_ns
    again = scorer.score(cfg_c, ds, Point.base(), use_cache=False)
    assert again.ceiling["key"] == ev_c.ceiling["key"] and wav.stat().st_mtime_ns == before
    assert again.ceiling["summary"] == ev_c.ceiling["summary"]


def test_a_further_point_does_not_rehash_the_model_folder(scored, monkeypatch):
    """Per point, the scorer reuses the loaded model's content identity (a hash of its folder: ~0.1 s per trial on
    the tiny preset, every small file of a real one) for the ceiling's and the base model's keys."""
    import qtts_sweep.train.store as store

    _, cfg_c, _, ds, scorer, ev_c, _ = scored
    calls = []
    monkeypatch.setattr(store, "model_identity", lambda *a, **k: calls.append(a) or "changed")
    again = scorer.score(cfg_c, ds, Point.base())
    assert calls == [] and again.key == ev_c.key and again.ceiling["key"] == ev_c.ceiling["key"]


def test_reference_modes_score_the_quality_terms_differently(scored):
    _, cfg_c, cfg_g, _, _, ev_c, ev_g = scored
    wc, wg = cfg_c.eval.objective.objective_weights(), cfg_g.eval.objective.objective_weights()
    gt = ev_c.summary.get("gt_spk_sim")
    ceiling = ev_c.ceiling["summary"]
    assert ev_c.objective == pytest.approx(composite_score(ev_c.summary, wc, gt, ceiling))
    assert ev_g.objective == pytest.approx(composite_score(ev_g.summary, wg, gt))
    assert ev_g.objective == pytest.approx(composite_score(ev_g.summary, wg, gt, ceiling))  # ceiling ignored
    # same generations (same decoding seed, base model), different reference: the objectives differ
    assert [r["codes"] for r in ev_c.per_line] == [r["codes"] for r in ev_g.per_line]
    assert ev_c.objective != pytest.approx(ev_g.objective)
    # term by term, the formula with this run's numbers: min(1, g(trial) / g(ceiling)); the ceiling against
    # itself scores exactly 1, or 0 when the codec cannot express the term (its goodness under CEILING_FLOOR)
    checked = 0
    for key in REGISTRY.quality_keys():
        if key in ceiling and key in ev_c.summary:
            only = ObjectiveWeights({k: float(k == key) for k in REGISTRY.weighable()}, reference="ceiling")
            g = REGISTRY[key].goodness
            cap = gt if g.capped else None
            g_c = g(ceiling[key], cap)
            assert composite_score(ceiling, only, gt, ceiling) == (1.0 if g_c >= CEILING_FLOOR else 0.0)
            want = min(1.0, g(ev_c.summary[key], cap) / g_c) if g_c >= CEILING_FLOOR else 0.0
            assert composite_score(ev_c.summary, only, gt, ceiling) == pytest.approx(want, rel=1e-12)
            checked += 1
    assert checked >= 3


def test_per_line_scores_use_each_lines_own_ceiling(scored):
    _, cfg_c, _, _, _, ev_c, _ = scored
    w = cfg_c.eval.objective.objective_weights()
    per = line_scores(ev_c.per_line, w, ev_c.ceiling["per_line"])
    assert set(per) == {(r["id"], r["seed"]) for r in ev_c.per_line}
    assert all(0.0 <= v <= 1.0 for v in per.values())
    absolute = line_scores(ev_c.per_line, w, None)
    assert per != absolute


def test_a_damaged_ceiling_is_moved_aside_and_recomputed(scored, capsys):
    """The ceiling entry has a manifest; an altered result.json is caught on load, the folder is moved aside
    (kept for inspection) and the ceiling recomputed, like every other store entry."""
    from qtts_sweep.evaluate.scoring import held_out_lines
    from qtts_sweep.util.integrity import read_manifest

    runs, cfg_c, _, ds, scorer, ev_c, _ = scored
    folder = Path(ev_c.ceiling["dir"])
    assert "result.json" in read_manifest(folder)
    saved = json.loads((folder / "result.json").read_text())
    saved["summary"]["mcd_db"] = 0.5  # a tampered or damaged number
    (folder / "result.json").write_text(json.dumps(saved))
    lines = held_out_lines(ds, cfg_c.eval.split, cfg_c.eval.max_lines)
    again = scorer.ceiling(cfg_c, ds, lines, scorer.reference(ds.ref_audio))
    assert again.summary["mcd_db"] == pytest.approx(ev_c.ceiling["summary"]["mcd_db"])
    assert len(list((runs / "evals").glob("ceiling-*.corrupt-*"))) == 1
    assert "cached codec ceiling" in capsys.readouterr().err
    assert json.loads((folder / "result.json").read_text())["summary"]["mcd_db"] != 0.5
