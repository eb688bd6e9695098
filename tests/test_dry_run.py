"""The full-size dry run: published shapes as data, the real Qwen text tokenizer, the memory plan's measurements,
and the dry run's path through the package (prepare -> train -> synth -> metrics -> promote -> export), run on
the tiny preset here (the 1.7B run is `make dry-run`; the 0.6B one takes longer than the suite allows on 2 cores,
see docs/real-size.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qtts_sweep.config.loader import load_config
from qtts_sweep.model.tiny import load_shape, published_shape, real_text_tokenizer, shaped_model_config
from qtts_sweep.tools import dry_run, dry_run_report, memory_plan
from qtts_sweep.util.problems import ValidationError


@pytest.mark.parametrize("shape", ["1.7b", "0.6b"])
def test_published_shapes_count_the_published_size_and_name_their_source(shape):
    data = load_shape(shape)
    assert "config.json" in data["source"] and data["hub_id"].startswith("Qwen/Qwen3-TTS-12Hz-")
    assert published_shape(data["hub_id"]) == shape
    params = dry_run_report.count_params(shape)
    published, diff = dry_run_report.check_published(shape, params)
    assert abs(diff) <= dry_run_report.PARAM_TOLERANCE
    assert params["text_embedding"] == 151936 * 2048
    assert 0.1e9 < params["codec"] < 0.3e9  # the 12 Hz codec at its real size


def test_a_wrong_shape_fails_the_published_size_check():
    params = dry_run_report.count_params("1.7b")
    # what a talker MLP of 8192 (instead of 6144) would add: 28 layers x 3 projections x 2048 x 2048
    wrong = {**params, "base": params["base"] + 28 * 3 * 2048 * 2048}
    with pytest.raises(ValueError, match="published 1.7B"):
        dry_run_report.check_published("1.7b", wrong)


def test_the_real_text_tokenizer_has_the_qwen_vocabulary_and_the_tts_ids():
    tok = real_text_tokenizer()
    config = shaped_model_config("1.7b")
    assert len(tok) == 151676  # 151643 BPE tokens + Qwen3 specials + the 7 tokens Qwen3-TTS adds
    assert tok.convert_tokens_to_ids("<tts_pad>") == config["tts_pad_token_id"] == 151671
    assert tok.convert_tokens_to_ids("<tts_text_bos>") == config["tts_bos_token_id"]
    assert tok.convert_tokens_to_ids("<tts_text_eod>") == config["tts_eos_token_id"]
    ids = tok("<|im_start|>assistant\nHello world.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    assert ids[:3] == [151644, 77091, 198] and ids[-5:] == [151645, 198, 151644, 77091, 198]
    assert len(ids) == 3 + 3 + 5  # "Hello", " world", "." between the role tokens and the suffix


def test_dry_run_refuses_a_model_without_a_published_shape():
    with pytest.raises(ValidationError, match="model.source"):
        dry_run_report.dry_run_shape(load_config(["model=tiny"]))


def test_the_memory_plan_fits_batches_linearly():
    plan = _plan()
    assert plan.fit() == (0.0, 2 * 10**7)
    assert plan.estimate(1) == pytest.approx(4.7e9 + 2e9) and plan.estimate(4) == pytest.approx(4.7e9 + 8e9)
    fits = [plan.largest_batch(c) for c in memory_plan.CARDS_GB]
    assert fits == sorted(fits) and fits[0] == int(1 + (24e9 - memory_plan.RESERVE_GIB * 2**30 - 6.7e9) // 2e9)


@pytest.mark.slow
def test_the_dry_run_path_runs_the_package_end_to_end_on_the_tiny_preset(tmp_path, tiny_model_dir):
    cfg = load_config(["model=tiny"])
    manifest, rows, durations = dry_run.pick_lines(cfg, 4, tmp_path / "lines")
    picked = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(picked) == 4 and picked[0]["id"] == max(durations, key=durations.get)
    dcfg = dry_run.dry_run_config(cfg, tiny_model_dir, manifest, tmp_path / "runs", steps=2, frames=6)
    meter = dry_run.PhaseMeter("cpu", lambda m: None)
    held: dict = {}

    def measure(loaded, ds):
        held["longest"] = memory_plan.longest_line(loaded, rows, durations)
        held["plan"] = memory_plan.measure_plan(loaded, dcfg, held["longest"], lambda m: None)

    out = dry_run.run_package_path(dcfg, meter, measure)
    names = [row.name for row in meter.rows]
    assert names[0].startswith("prepare") and names[-1].startswith("export") and len(names) == 6
    assert all(row.peak_bytes > 0 and row.seconds > 0 for row in meter.rows)
    assert out["train_steps"] == 2 and out["synth_audio_s"] > 0
    assert (Path(out["bundle"]) / "production.yaml").is_file()
    assert json.loads((Path(out["export"]) / "config.json").read_text())["tts_model_type"] == "custom_voice"
    plan = held["plan"]
    one, two = [p for p in plan.points if p.positions == plan.longest_positions]
    assert two.saved_bytes == pytest.approx(2 * one.saved_bytes, rel=0.05)  # activations scale with the batch
    assert plan.optim_bytes == pytest.approx(2 * plan.lora_bytes, rel=0.01)  # AdamW: two moments per parameter
    assert 0 < one.fp32_bytes < one.saved_bytes  # LoRA inputs and norms are counted at 4 bytes, the rest at 2
    assert plan.eval is not None and plan.eval.batch == dcfg.eval.batch_size and plan.eval.kv_bytes > 0
    assert plan.eval.positions > held["longest"]["tokens"] + memory_plan.PROMPT_ROWS  # room for max_new_tokens frames
    text = "\n".join(memory_plan.format_plan(plan, held["longest"]))
    assert "largest training batch whose worker peak fits" in text and "24 GB" in text and "eval (batch" in text


def test_activation_bytes_count_fp32_kept_tensors_at_4_bytes():
    # 1000 elements saved in bf16 matmuls, 300 inside LoRA adapters (peft keeps them fp32), 200 in norms (upcast)
    assert memory_plan.activation_bytes({"bf16": 1000, "fp32_kept": 500}) == 1000 * 2 + 500 * 4
    with pytest.raises(ValueError, match="unknown activation kind"):
        memory_plan.activation_bytes({"fp16": 1})


def test_fp32_kept_modules_are_lora_adapters_and_norms():
    names = {
        "talker.model.layers.0.self_attn.q_proj.lora_A.default": True,
        "talker.model.layers.0.self_attn.q_proj.lora_B.default": True,
        "talker.model.layers.0.self_attn.q_proj.lora_dropout.default": True,
        "talker.model.layers.0.self_attn.q_proj.base_layer": False,
        "talker.model.layers.0.mlp.down_proj": False,
    }
    for name, kept in names.items():
        assert memory_plan.keeps_fp32(name, "Linear") is kept, name
    assert memory_plan.keeps_fp32("talker.model.layers.0.input_layernorm", "Qwen3TTSRMSNorm")
    assert memory_plan.keeps_fp32("talker.model.norm", "LayerNorm")


def test_kv_cache_bytes_of_the_published_talker():
    # 1.7B talker: 28 layers x 8 kv heads x 128 dims, K and V, bf16; code predictor 5 layers, 17 positions per frame
    shape = load_shape("1.7b")
    kv = memory_plan.kv_cache_bytes(shape["talker"], positions=1000, batch=4)
    assert kv == 2 * 28 * 8 * 128 * 1000 * 4 * 2 == 458_752_000


def _plan(**kw):
    point = memory_plan.ActPoint
    base = dict(
        weights_bytes=4 * 10**9,
        codec_bytes=3 * 10**8,
        lora_bytes=10**8,
        grad_bytes=10**8,
        optim_bytes=2 * 10**8,
        points=[point(1, 50, 1 * 10**9), point(1, 100, 2 * 10**9), point(2, 100, 4 * 10**9)],
        longest_positions=100,
    )
    return memory_plan.MemoryPlan(**(base | kw))


def test_the_eval_phase_counts_weights_lora_kv_cache_decode_and_speaker_encoder():
    ev = memory_plan.EvalPlan(batch=4, positions=500, kv_bytes=6 * 10**9, decode_bytes=None, speaker_bytes=None)
    plan = _plan(eval=ev)
    # eval holds weights + codec + LoRA (no gradients, no optimizer state) + KV cache + measured extras
    assert plan.eval_total() == 4e9 + 3e8 + 1e8 + 6e9
    assert plan.peak(1) == max(plan.estimate(1), plan.eval_total()) == 10.4e9
    assert plan.largest_batch(24) >= 1 and plan.largest_batch(8) == 0  # eval alone does not fit 8 GB less reserve
    ev2 = memory_plan.EvalPlan(batch=4, positions=500, kv_bytes=6 * 10**9, decode_bytes=10**9, speaker_bytes=10**8)
    assert _plan(eval=ev2).eval_total() == pytest.approx(10.4e9 + 1.1e9)


def test_the_plan_says_which_terms_are_measured_and_which_assumed():
    ev = memory_plan.EvalPlan(batch=4, positions=500, kv_bytes=6 * 10**9, decode_bytes=None, speaker_bytes=None)
    lines = memory_plan.format_plan(_plan(eval=ev), {"id": "x", "seconds": 7.0, "frames": 88, "tokens": 2})
    text = "\n".join(lines)
    for term, basis in [
        ("weights", "counted"),
        ("AdamW state", "measured"),
        ("activations", "measured"),
        ("KV cache", "computed"),
        ("codec decode", "not measured"),
        ("speaker encoder", "not measured"),
        ("reserve", "assumed"),
    ]:
        line = next((x for x in lines if x.strip().startswith(term)), None)
        assert line is not None and basis in line, (term, basis, text)
    assert "eval (batch 4" in text and "peak" in text
