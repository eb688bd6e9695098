"""Cache keys and identities without a model: the codec ceiling's key and the ceiling formula, the base model's
eval key, the speaker-similarity target per reference clip, and the speech tokenizer's cached identity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.evaluate.scoring import base_training_key, ceiling_key, device_type
from qtts_sweep.evaluate.synth import Line
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import CEILING_FLOOR, ObjectiveWeights, composite_score

LINES = [Line("a", "One line.", None, None), Line("b", "Two lines.", None, None)]


def _eval(*overrides):
    return load_config(["model=tiny", *overrides], check_model=False).eval


def test_the_ceiling_key_follows_what_its_numbers_depend_on():
    ev = _eval()
    key = ceiling_key("data", "codec", ev, LINES, "talker", "torch.float32", "cpu")
    assert key.startswith("ceiling-") and key == ceiling_key(
        "data", "codec", ev, LINES, "talker", "torch.float32", "cpu"
    )
    changed = [
        ceiling_key("data2", "codec", ev, LINES, "talker", "torch.float32", "cpu"),
        ceiling_key("data", "codec2", ev, LINES, "talker", "torch.float32", "cpu"),
        ceiling_key("data", "codec", ev, LINES[:1], "talker", "torch.float32", "cpu"),
        ceiling_key("data", "codec", _eval("eval.metrics.mos=none"), LINES, "talker", "torch.float32", "cpu"),
        ceiling_key("data", "codec", ev, LINES, "talker2", "torch.float32", "cpu"),  # qwen_speaker scores with it
        ceiling_key("data", "codec", ev, LINES, "talker", "torch.bfloat16", "cpu"),
        ceiling_key("data", "codec", ev, LINES, "talker", "torch.float32", "cuda"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    # no generation happens: decoding, scale and objective weights never enter
    for other in (
        _eval("eval.decoding.temperature=0.5"),
        _eval("eval.lora_scale=0.9"),
        _eval("eval.objective.weights.mcd_db=0"),
    ):
        assert ceiling_key("data", "codec", other, LINES, "talker", "torch.float32", "cpu") == key
    # without the talker's speaker encoder in the metrics, the talker does not matter
    off = _eval("eval.metrics.qwen_speaker=false")
    assert ceiling_key("d", "c", off, LINES, "t1", "x", "cpu") == ceiling_key("d", "c", off, LINES, "t2", "x", "cpu")
    assert device_type("cuda:3") == "cuda" and device_type("cpu") == "cpu"


def test_the_base_models_eval_key_names_the_talker_dtype_device_and_data():
    key = base_training_key("model-a", "torch.float32", "cpu", "data")
    assert key.startswith("base-") and key == base_training_key("model-a", "torch.float32", "cpu", "data")
    others = {
        base_training_key("model-b", "torch.float32", "cpu", "data"),
        base_training_key("model-a", "torch.bfloat16", "cpu", "data"),
        base_training_key("model-a", "torch.float32", "cuda", "data"),
        base_training_key("model-a", "torch.float32", "cpu", "data-with-another-reference"),
    }
    assert key not in others and len(others) == 4


@pytest.mark.parametrize("name", ["mcd_db", "f0_error", "spk_sim"])
def test_the_ceiling_formula_term_by_term(name):
    """One quality term alone: score = min(1, g(m) / g(c)); a ceiling below CEILING_FLOOR drops the term."""
    assert name in REGISTRY.quality_keys()
    only = ObjectiveWeights({k: float(k == name) for k in REGISTRY.weighable()}, reference="ceiling")
    g = REGISTRY[name].goodness
    worse, better = (8.0, 4.0) if REGISTRY[name].direction == "minimize" else (0.4, 0.8)
    for m, c in ((worse, better), (better, worse), (better, better)):
        want = min(1.0, g(m, None) / g(c, None))
        assert composite_score({name: m}, only, None, {name: c}) == pytest.approx(want, rel=1e-12)
    assert composite_score({name: worse}, only, None, {name: better}) < 1.0  # a real gap costs
    absolute = ObjectiveWeights({k: float(k == name) for k in REGISTRY.weighable()}, reference="ground_truth")
    assert composite_score({name: worse}, absolute, None, {name: better}) == pytest.approx(g(worse, None))
    # a ceiling the codec cannot express (goodness ~ 0) leaves the term out: no term left, the worst score
    hopeless = 1e6 if REGISTRY[name].direction == "minimize" else -1.0
    assert g(hopeless, None) < CEILING_FLOOR
    assert composite_score({name: worse}, only, None, {name: hopeless}) == 0.0


def test_the_speaker_target_follows_the_reference_clip():
    from qtts_sweep.evaluate.suite import MetricSuite

    cfg = load_config(["model=tiny", "eval.metrics.mos=none", "eval.metrics.qwen_speaker=false"], check_model=False)
    suite = MetricSuite(cfg, synthesizer=None)  # resemblyzer only: no model needed
    t = np.arange(24000 * 2) / 24000
    clip_a = (0.3 * np.sin(2 * math.pi * 140 * t) * (1 + np.sin(2 * math.pi * 3 * t))).astype(np.float32)
    clip_b = np.random.default_rng(0).normal(0, 0.1, t.size).astype(np.float32)
    ta, tb = suite.target(clip_a), suite.target(clip_b)
    assert not np.allclose(ta["resemblyzer"], tb["resemblyzer"])
    assert suite.target(clip_a) is ta  # computed once per clip


def test_the_tokenizer_identity_is_hashed_once(tmp_path, monkeypatch):
    from qtts_sweep.data.codes import tokenizer_identity
    from qtts_sweep.util import digests

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "model" / "speech_tokenizer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * 4096)
    hashed = []
    real = digests._sha256  # noqa: SLF001 - counting the hashes, not replacing them
    monkeypatch.setattr(digests, "_sha256", lambda p: hashed.append(p.name) or real(p))
    first = tokenizer_identity(str(folder.parent))
    assert sorted(hashed) == ["config.json", "model.safetensors"]
    digests._memo.clear()  # noqa: SLF001 - a new process: the per-user cache file still knows them
    assert tokenizer_identity(str(folder.parent)) == first and len(hashed) == 2
    (folder / "model.safetensors").write_bytes(b"v" * 4096)  # rewritten: hashed again, new identity
    assert tokenizer_identity(str(folder.parent)) != first and hashed[-1] == "model.safetensors"
