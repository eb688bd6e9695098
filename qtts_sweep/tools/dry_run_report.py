"""The dry run's report: parameter counts checked against the published size, phases with their time and peak
memory, training and synthesis speed, and the memory plan (memory_plan.py) as text.

Owns: `DryRunReport`, the published-shape check and `format_report`. Does not own: the plan's numbers
(memory_plan.py) or running the path (dry_run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.model.tiny import load_shape, published_shape, shape_names
from qtts_sweep.tools.memory_plan import GIB, MemoryPlan, format_plan
from qtts_sweep.util.problems import Problem, ValidationError

PARAM_TOLERANCE = 0.10  # published size vs our count without the text-embedding table


@dataclass
class PhaseRow:
    name: str
    seconds: float
    peak_bytes: int


@dataclass
class DryRunReport:
    shape: str
    device: str
    params: dict[str, int]
    published: float
    phases: list[PhaseRow]
    meter_kind: str
    plan: MemoryPlan
    train_steps: int
    train_epoch_s: float
    synth_s: float
    synth_audio_s: float
    longest: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)


def dry_run_shape(cfg: Config) -> str:
    """The published shape of the configured model (model.source is its hub id); every other model is refused."""
    shape = published_shape(cfg.model.source)
    if shape is None:
        published = [load_shape(n)["hub_id"] for n in shape_names() if load_shape(n).get("hub_id")]
        raise ValidationError(
            [
                Problem(
                    "model.source",
                    cfg.model.source,
                    f"has no published shape in qtts_sweep/model/shapes/ (known: {', '.join(published)})",
                    "dry-run model=qwen3_tts_1.7b_base or model=qwen3_tts_0.6b_base",
                )
            ],
            "dry run",
        )
    return shape


def count_params(shape: str) -> dict[str, int]:
    """Parameters of the shape, counted on the meta device (no memory, no weights): base model, the text
    embedding table inside it, the codec, and the LoRA adapter of the default LoRA config."""
    import torch

    from qtts_sweep.model.tiny import new_codec, new_model, real_codec_config, shaped_model_config

    with torch.device("meta"):
        model = new_model(shaped_model_config(shape))
        codec = new_codec(real_codec_config())
    return {
        "base": sum(p.numel() for p in model.parameters()),
        "text_embedding": model.talker.get_text_embeddings().weight.numel(),
        "codec": sum(p.numel() for p in codec.parameters()),
    }


def check_published(shape: str, params: dict[str, int]) -> tuple[float, float]:
    """(published size, relative difference); raises when the shape data disagree with the published size."""
    published = float(load_shape(shape)["published_params"])
    counted = params["base"] - params["text_embedding"]
    diff = counted / published - 1
    if abs(diff) > PARAM_TOLERANCE:
        raise ValueError(
            f"shape {shape}: {counted / 1e9:.3f}B parameters without the text-embedding table, published "
            f"{published / 1e9:.1f}B ({diff:+.1%}, tolerance ±{PARAM_TOLERANCE:.0%}): check shapes/{shape}.json"
        )
    return published, diff


def format_report(r: DryRunReport) -> str:
    p, plan = r.params, r.plan
    without = p["base"] - p["text_embedding"]
    lines = [
        f"dry run: {r.shape} shape, random weights, real Qwen text tokenizer, real-size 12 Hz codec, on {r.device}",
        f"parameters: base {p['base'] / 1e9:.3f}B (talker + code predictor + speaker encoder), codec "
        f"{p['codec'] / 1e9:.3f}B, LoRA {p['lora'] / 1e6:.1f}M, trainable {p['trainable'] / 1e6:.1f}M",
        f"  published {r.published / 1e9:.1f}B vs {without / 1e9:.3f}B without the text-embedding table "
        f"({without / r.published - 1:+.1%}; tolerance ±{PARAM_TOLERANCE:.0%}): ok",
        f"phases ({r.meter_kind}):",
    ]
    lines += [f"  {row.name:<46} {row.seconds:8.1f} s  {row.peak_bytes / GIB:7.2f} GiB" for row in r.phases]
    step = next((pt.seconds for pt in plan.points if pt.seconds and pt.batch == 1), None)
    lines.append(
        f"training: {step:.2f} s per step (batch 1, longest line, {plan.longest_positions} positions); "
        f"epoch of {r.train_steps} step(s) with validation and checkpoint save: {r.train_epoch_s:.1f} s"
    )
    lines.append(
        f"synthesis: {r.synth_s / max(r.synth_audio_s, 1e-9):.2f} s per synthesized second "
        f"({r.synth_audio_s:.2f} s of audio in {r.synth_s:.1f} s, greedy, codec decode included)"
    )
    lines += format_plan(plan, r.longest)
    return "\n".join(lines)
