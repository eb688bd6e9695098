"""Synthesis: one base model for every (checkpoint, scale); scale 0 is the base model; decoding reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qtts_sweep.config.loader import load_config
from qtts_sweep.evaluate.synth import Line, Synthesizer, batch_seed, decoding_kwargs, max_new_tokens_for
from qtts_sweep.model import modeling
from qtts_sweep.train.loop import ensure_epoch
from tests.helpers.sweeps import DEMO_DIR

FAST = [
    "model=tiny",
    "data=demo",
    "train.lr=3e-3",
    "train.max_epochs=2",
    "train.epochs=2",
    "eval.epoch=2",
    "train.max_steps_per_epoch=3",
    "eval.decoding.frames_per_char=0.4",
    "eval.decoding.min_frames=8",
]
LINES = [
    Line("a", "Hello there."),
    Line("b", "A second, much longer line for the batch, with commas."),
    Line("c", "Third!"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = load_config([*FAST, f"paths.store_dir={tmp_path_factory.mktemp('store')}"])
    return cfg, ensure_epoch(cfg, 1, progress=False), ensure_epoch(cfg, 2, progress=False)


@pytest.fixture(scope="module")
def synth(trained):
    return Synthesizer(trained[0])


@pytest.fixture(scope="module")
def spk(synth):
    return modeling.speaker_embedding(synth.loaded, modeling.load_audio_24k(DEMO_DIR / "ref" / "ref.flac"))


def _greedy(cfg):
    return dataclasses.replace(cfg.eval.decoding, mode="greedy")


@pytest.mark.slow
def test_scale_zero_reproduces_the_base_voice_clone_path(trained, synth, spk):
    cfg, _, r2 = trained
    synth.use(r2.checkpoint, 0.0, spk)
    ours = synth.generate(LINES, cfg.eval.decoding, batch_size=3)
    base = modeling.load_model(cfg.model)  # a fresh model without any LoRA layer
    caps = [max_new_tokens_for(line.text, cfg.eval.decoding) for line in LINES]
    seed = batch_seed(cfg.eval.decoding.seed, 0, [line.id for line in LINES])
    ref = modeling.generate_codes(
        base, [line.text for line in LINES], spk, max(caps), seed=seed, **decoding_kwargs(cfg.eval.decoding)
    )
    for s, c, cap in zip(ours, ref, caps, strict=True):
        assert torch.equal(s.codes, c[: cap - 1].cpu())  # sampled decoding, bit for bit


@pytest.mark.slow
def test_another_checkpoint_or_scale_changes_the_output_without_reloading(trained, synth, spk):
    cfg, r1, r2 = trained
    model_id = id(synth.model)
    outs = {}
    for name, ckpt, scale in (("e1", r1.checkpoint, 1.0), ("e2", r2.checkpoint, 1.0), ("e2-half", r2.checkpoint, 0.5)):
        synth.use(ckpt, scale, spk)
        outs[name] = [s.codes for s in synth.generate(LINES[:1], _greedy(cfg), batch_size=1)]
    assert id(synth.model) == model_id
    assert not torch.equal(outs["e1"][0], outs["e2"][0])
    assert not torch.equal(outs["e2"][0], outs["e2-half"][0])


@pytest.mark.slow
def test_batched_greedy_equals_one_by_one(trained, synth, spk):
    cfg, _, r2 = trained
    synth.use(r2.checkpoint, 1.0, spk)
    batched = synth.generate(LINES, _greedy(cfg), batch_size=3)
    single = [synth.generate([line], _greedy(cfg), batch_size=1)[0] for line in LINES]
    for b, s in zip(batched, single, strict=True):
        assert torch.equal(b.codes, s.codes), b.line.id


@pytest.mark.slow
def test_sampling_reproduces_with_the_same_seed_and_batches_and_flags_the_cap(trained, synth, spk):
    cfg, _, r2 = trained
    synth.use(r2.checkpoint, 0.3, spk)
    a = synth.generate(LINES, cfg.eval.decoding, batch_size=2)
    b = synth.generate(LINES, cfg.eval.decoding, batch_size=2)
    other = synth.generate(LINES, cfg.eval.decoding, batch_size=2, seed_index=1)
    assert all(torch.equal(x.codes, y.codes) and np.array_equal(x.wav, y.wav) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x.codes, y.codes) for x, y in zip(a, other, strict=True))
    for s in a:  # a random tiny model never emits EOS: every line hits its own cap and is flagged
        cap = max_new_tokens_for(s.line.text, cfg.eval.decoding)
        assert s.hit_cap and s.codes.shape[0] == cap - 1 and len(s.wav) == s.codes.shape[0] * 1920
