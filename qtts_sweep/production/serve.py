"""Synthesis from a production bundle: exactly the trial's base model, LoRA layout, scale, decoding and batch size.

Owns: turning a bundle into a config and a synthesizer, and `qtts-sweep synth --production`. Does not own: the
bundle format (bundle.py) or generation (qtts_sweep.evaluate.synth).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from qtts_sweep.config.schema import Config
from qtts_sweep.production.bundle import Bundle, BundleError, resolve_bundle
from qtts_sweep.util.problems import Problem


def bundle_config(cfg: Config, bundle: Bundle) -> Config:
    """A config that synthesizes exactly as the bundle says (base model, LoRA layout, scale, decoding, batch)."""
    model = dataclasses.replace(
        cfg.model,
        source=bundle.base_model,
        tiny=bundle.base_tiny,
        local_files_only=cfg.model.local_files_only or bundle.base_tiny,
    )
    ev = dataclasses.replace(
        cfg.eval, decoding=bundle.decoding, batch_size=bundle.batch_size, lora_scale=bundle.lora_scale
    )
    return dataclasses.replace(cfg, model=model, lora=bundle.lora, eval=ev)


def bundle_synthesizer(cfg: Config, bundle: Bundle):
    from qtts_sweep.evaluate.synth import Synthesizer

    synth = Synthesizer(bundle_config(cfg, bundle))
    synth.use(bundle.dir, bundle.lora_scale)  # adapter.safetensors + speaker_embedding.safetensors
    return synth


def production_synth(cfg: Config, where: str, texts: list[str], out_dir: str | None = None) -> str:
    """`qtts-sweep synth --production <bundle|models:/name@production> --text ...`."""
    import soundfile as sf

    from qtts_sweep.evaluate.synth import Line

    if not texts:
        raise BundleError([Problem("--text", None, "nothing to say", 'pass --text "..." or --text-file')], "request")
    with tempfile.TemporaryDirectory(prefix="qtts-bundle-") as tmp:
        bundle = resolve_bundle(cfg.tracking, where, Path(tmp))
        synth = bundle_synthesizer(cfg, bundle)
        out = Path(out_dir or Path(cfg.paths.runs_dir) / "synth" / "production")
        out.mkdir(parents=True, exist_ok=True)
        lines = [Line(f"text{i:03d}", t) for i, t in enumerate(texts)]
        report = [
            f"{len(lines)} line(s) from bundle {bundle.dir} (study {bundle.origin.get('study')}, trial "
            f"{bundle.origin.get('trial')}, scale {bundle.lora_scale}):"
        ]
        for s in synth.generate(lines, bundle.decoding, bundle.batch_size):
            path = out / f"{s.line.id}.wav"
            sf.write(path, s.wav, 24000)
            report.append(f"  {path} ({len(s.wav) / 24000:.2f} s){'  [no EOS]' if s.hit_cap else ''}")
    return "\n".join(report)
