"""Promotion: bundle, test-split report, registry aliases, bit-exact synthesis from the bundle, merged export."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from qtts_sweep.evaluate.synth import Line
from qtts_sweep.production.bundle import Bundle, BundleError
from qtts_sweep.production.export import export_merged
from qtts_sweep.production.promote import promote
from qtts_sweep.production.serve import bundle_synthesizer
from qtts_sweep.sweep.selection import SelectionError
from tests.helpers.sweeps import tiny_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("promo")
    # no pruning, so all three trials complete and the alias rotation below always has a second trial
    driver = tiny_sweep(tmp, tiny_model_dir, n_trials=3, pruner="none")
    driver.run()
    # every promotion here runs the production gate: 2 lines (its numbers are tested on 4, below), not the demo's 8
    cfg = driver.cfg0
    gate = dataclasses.replace(cfg.production.stress, lines=2)
    return tmp, dataclasses.replace(cfg, production=dataclasses.replace(cfg.production, stress=gate))


def _storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'optuna.db'}"


def test_promote_writes_a_self_contained_bundle_scored_on_test_and_registered(swept):
    tmp, cfg = swept
    r = promote(cfg, "tiny", _storage(tmp))
    assert r.changed and r.model_version == "1"
    raw = yaml.safe_load((r.bundle / "production.yaml").read_text())
    assert "runs/store" not in (r.bundle / "production.yaml").read_text().replace(str(tmp), "")
    assert raw["origin"]["study"] == "tiny" and raw["origin"]["mlflow_run_id"]
    assert raw["metrics"]["test"] and raw["metrics"]["val"]  # test scored beside the val metrics that chose it
    assert set(raw["decoding"]) >= {"mode", "seed", "temperature"} and raw["batch_size"] == 2
    bundle = Bundle.load(r.bundle)
    assert bundle.adapter.is_file() and bundle.speaker_embedding.is_file()
    # promoting the same trial again changes nothing
    again = promote(cfg, "tiny", _storage(tmp))
    assert not again.changed
    client = MlflowClient(cfg.tracking.tracking_uri)
    assert str(client.get_model_version_by_alias("qtts-tiny", "production").version) == "1"
    # another completed trial takes over `production`; the replaced version keeps `previous`
    import optuna

    study = optuna.load_study(study_name="tiny", storage=_storage(tmp))
    other = next(t.number for t in study.trials if t.state.name == "COMPLETE" and t.number != r.trial)
    promote(cfg, "tiny", _storage(tmp), trial_number=other)
    assert str(client.get_model_version_by_alias("qtts-tiny", "production").version) == "2"
    assert str(client.get_model_version_by_alias("qtts-tiny", "previous").version) == "1"
    promote(cfg, "tiny", _storage(tmp), trial_number=r.trial)  # back to the best for the next tests


def test_bundle_reproduces_the_trials_logged_audio_bit_for_bit(swept):
    tmp, cfg = swept
    r = promote(cfg, "tiny", _storage(tmp))
    bundle = Bundle.load(r.bundle)
    import optuna

    trial = optuna.load_study(study_name="tiny", storage=_storage(tmp)).trials[r.trial]
    logged = json.loads((Path(trial.user_attrs["eval_dir"]) / "result.json").read_text())["per_line"]
    lines = [Line(row["id"], row["text"]) for row in logged if row["seed"] == 0]
    assert lines and len(logged) == len(lines)  # rows to compare (one seed each): an empty zip proves nothing
    synth = bundle_synthesizer(cfg, bundle)
    out = synth.generate(lines, bundle.decoding, bundle.batch_size)
    import soundfile as sf

    for s, row in zip(out, logged, strict=True):
        assert s.codes.tolist() == row["codes"]
        wav, _ = sf.read(Path(trial.user_attrs["eval_dir"]) / row["wav"], dtype="float32")
        assert np.array_equal(s.wav.astype(np.float32), wav)


def test_cli_synth_from_bundle_and_from_the_registry(swept, capsys):
    from qtts_sweep.cli import main

    tmp, cfg = swept
    r = promote(cfg, "tiny", _storage(tmp))
    over = [f"paths.runs_dir={tmp}", f"paths.models_dir={cfg.paths.models_dir}"]
    text = 'She said, "hello, world" -- twice.'
    assert main(["synth", "--production", str(r.bundle / "production.yaml"), "--text", text, *over]) == 0
    assert "text000.wav" in capsys.readouterr().out
    assert (
        main(
            ["synth", "--production", "models:/qtts-tiny@production", "--text", text, *over, "--out", str(tmp / "reg")]
        )
        == 0
    )
    assert (tmp / "reg" / "text000.wav").is_file()


def test_bad_bundles_fail_before_any_model_loads(swept, tmp_path):
    tmp, cfg = swept
    r = promote(cfg, "tiny", _storage(tmp))
    broken = tmp_path / "broken"
    shutil.copytree(r.bundle, broken)
    (broken / "adapter.safetensors").unlink()
    raw = yaml.safe_load((broken / "production.yaml").read_text())
    raw["lora_scale"] = "loud"
    raw["base_model"]["identity"] = "0" * 16
    (broken / "production.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BundleError) as err:
        Bundle.load(broken)
    text = str(err.value)
    assert "adapter.safetensors" in text and "lora_scale" in text
    raw["lora_scale"] = 0.5
    (broken / "production.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy2(r.bundle / "adapter.safetensors", broken / "adapter.safetensors")
    with pytest.raises(BundleError, match="now hashes to"):
        Bundle.load(broken)


def test_refuses_failed_or_pruned_trials(swept):
    tmp, cfg = swept
    import optuna

    study = optuna.load_study(study_name="tiny", storage=_storage(tmp))
    t = study.ask()
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    with pytest.raises(SelectionError, match="only COMPLETE trials"):
        promote(cfg, "tiny", _storage(tmp), trial_number=t.number)


def test_export_merged_custom_voice_model_loads_without_peft_or_qtts_sweep(swept, tmp_path):
    tmp, cfg = swept
    r = promote(cfg, "tiny", _storage(tmp))
    out = export_merged(cfg, str(r.bundle), tmp_path / "exported")
    bundle = Bundle.load(r.bundle)
    text = "The kettle is boiling."
    greedy = dataclasses.replace(bundle.decoding, mode="greedy")
    synth = bundle_synthesizer(cfg, bundle)
    ours = synth.generate([Line("x", text)], greedy, 1)[0]
    code = f"""
import sys
sys.modules["peft"] = None
sys.modules["qtts_sweep"] = None
import numpy as np, torch
from qwen_tts import Qwen3TTSModel
m = Qwen3TTSModel.from_pretrained({str(out)!r}, dtype=torch.float32, attn_implementation="sdpa")
wavs, sr = m.generate_custom_voice(text={text!r}, speaker="target", language="auto", non_streaming_mode=True,
    do_sample=False, subtalker_dosample=False, repetition_penalty={greedy.repetition_penalty},
    max_new_tokens={ours.max_new_tokens})
np.save(sys.argv[1], wavs[0])
"""
    dst = tmp_path / "wav.npy"
    proc = subprocess.run([sys.executable, "-c", code, str(dst)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(dst)
    assert theirs.shape == ours.wav.shape and np.array_equal(theirs, ours.wav)


def test_production_gate_records_its_numbers_and_refuses_a_pair_that_never_stops(swept):
    from qtts_sweep.production.stress import PromotionRefused

    tmp, cfg = swept

    def with_gate(**limits):
        gate = dataclasses.replace(cfg.production.stress, lines=4, **limits)
        return dataclasses.replace(cfg, production=dataclasses.replace(cfg.production, stress=gate))

    # measured and recorded, nothing refused (the tiny demo's setting)
    result = promote(with_gate(max_no_eos_rate=None), "tiny", _storage(tmp), name="gate-off")
    stress = Bundle.load(result.bundle, check_model=False).metrics["stress"]
    assert stress["lines"] == 4 and 0 <= stress["no_eos_ci"][0] <= stress["no_eos_rate"] <= stress["no_eos_ci"][1]
    run = MlflowClient(cfg.tracking.tracking_uri).get_run(Bundle.load(result.bundle).origin["mlflow_run_id"])
    assert run.data.metrics["stress_lines"] == 4.0
    # the tiny preset's trials never stop on their own: a 1% limit refuses, and nothing is written
    with pytest.raises(PromotionRefused, match="never emitted EOS") as refused:
        promote(with_gate(max_no_eos_rate=0.01), "tiny", _storage(tmp), name="gated")
    assert "production.stress.max_no_eos_rate" in str(refused.value) and "promote --trial" in str(refused.value)
    assert not (Path(cfg.paths.production_dir) / "gated").exists()
