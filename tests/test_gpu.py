"""The bit-exact claims in bf16 on CUDA (tiny preset): batched greedy synthesis equals one-by-one, and a promoted
bundle synthesizes exactly the trial's logged audio. CPU versions: tests/test_synth.py, tests/test_promote.py.
Skipped without a CUDA device; `bash scripts/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qtts_sweep.config.loader import load_config
from qtts_sweep.evaluate.synth import Line, Synthesizer
from qtts_sweep.model import modeling
from qtts_sweep.train.loop import ensure_epoch
from tests.helpers.sweeps import DEMO_DIR, tiny_sweep

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = ["model.device=cuda:0", "model.dtype=bfloat16"]
LINES = [
    Line("a", "Hello there."),
    Line("b", "A second, much longer line for the batch, with commas."),
    Line("c", "Third!"),
]


def test_bf16_cuda_batched_greedy_equals_one_by_one(tmp_path):
    cfg = load_config(
        [
            "model=tiny",
            *GPU,
            "train.lr=3e-3",
            "train.max_epochs=1",
            "train.epochs=1",
            "eval.epoch=1",
            "train.max_steps_per_epoch=3",
            "eval.decoding.frames_per_char=0.4",
            "eval.decoding.min_frames=8",
            f"paths.store_dir={tmp_path / 'store'}",
        ]
    )
    result = ensure_epoch(cfg, 1, progress=False)
    synth = Synthesizer(cfg)
    assert synth.model.dtype == torch.bfloat16 and synth.loaded.device.startswith("cuda")
    spk = modeling.speaker_embedding(synth.loaded, modeling.load_audio_24k(DEMO_DIR / "ref" / "ref.flac"))
    synth.use(result.checkpoint, 1.0, spk)
    greedy = dataclasses.replace(cfg.eval.decoding, mode="greedy")
    batched = synth.generate(LINES, greedy, batch_size=3)
    single = [synth.generate([line], greedy, batch_size=1)[0] for line in LINES]
    for b, s in zip(batched, single, strict=True):
        assert b.codes.shape[0] > 0
        assert torch.equal(b.codes, s.codes), b.line.id


def test_bf16_cuda_bundle_reproduces_the_trials_logged_audio(tmp_path, tiny_model_dir):
    import soundfile as sf

    from qtts_sweep.production.bundle import Bundle
    from qtts_sweep.production.promote import promote
    from qtts_sweep.production.serve import bundle_synthesizer

    driver = tiny_sweep(tmp_path, tiny_model_dir, n_trials=2, extra=GPU)
    driver.run()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    r = promote(driver.cfg0, "tiny", storage)
    bundle = Bundle.load(r.bundle)
    import optuna

    trial = optuna.load_study(study_name="tiny", storage=storage).trials[r.trial]
    logged = json.loads((Path(trial.user_attrs["eval_dir"]) / "result.json").read_text())["per_line"]
    lines = [Line(row["id"], row["text"]) for row in logged if row["seed"] == 0]
    synth = bundle_synthesizer(driver.cfg0, bundle)
    assert synth.model.dtype == torch.bfloat16 and synth.loaded.device.startswith("cuda")
    out = synth.generate(lines, bundle.decoding, bundle.batch_size)
    for s, row in zip(out, logged, strict=True):
        assert s.codes.tolist() == row["codes"]
        wav, _ = sf.read(Path(trial.user_attrs["eval_dir"]) / row["wav"], dtype="float32")
        assert np.array_equal(s.wav.astype(np.float32), wav)
