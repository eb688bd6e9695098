"""Per-line metrics of synthesized audio: the configured metric backends (built once per process), the
teacher-forced accuracies of both heads, and the code-level counts (frames, no-EOS).

Owns computing one line's numbers. Does not own aggregation, the objective or caching (scoring.py), metric
definitions (qtts_sweep.metrics).
"""

from __future__ import annotations

import math
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.evaluate.synth import Line, Synthesized, Synthesizer
from qtts_sweep.metrics.catalog import REGISTRY


class MetricSuite:
    """The configured metric backends, created once per process and reused for every evaluation."""

    def __init__(self, cfg: Config, synthesizer: Synthesizer):
        self.cfg = cfg
        self.synth = synthesizer
        m = cfg.eval.metrics
        self.backends: dict[str, str] = {"audio": "qtts_sweep.metrics.audio", "codes": "teacher-forced"}
        self.speaker = None
        self.mos = None
        if m.speaker == "resemblyzer":
            from qtts_sweep.metrics.speaker import SpeakerSimilarity

            self.speaker = SpeakerSimilarity()
            self.backends["spk_sim"] = "resemblyzer"
        if m.mos == "dnsmos":
            from qtts_sweep.metrics.mos import MosPredictor

            self.mos = MosPredictor()
            self.backends["mos"] = "dnsmos (speechmos)"
        self.asr = None
        if m.asr_backend != "none":
            from qtts_sweep.metrics.asr import load_asr

            self.asr = load_asr(m.asr_backend, m.asr_model_path, synthesizer.loaded.device)
            self.backends["wer"] = f"{m.asr_backend}:{m.asr_model_path}"
        if m.qwen_speaker:
            self.backends["spk_sim_qwen"] = "base model speaker encoder"
        self._target: dict[str, Any] = {}
        self._ground_truth: dict[tuple[str, str | None], tuple[Any, float | None]] = {}

    def target(self, ref_wav: Any) -> dict[str, Any]:
        """Embeddings of the target speaker's reference clip, computed once per clip: a trial whose dataset has
        another reference clip gets its own target, never the first trial's."""
        import hashlib

        import numpy as np

        clip = hashlib.sha256(np.ascontiguousarray(ref_wav, dtype=np.float32).tobytes()).hexdigest()
        if clip not in self._target:
            target: dict[str, Any] = {"clip": clip}
            if self.speaker is not None:
                target["resemblyzer"] = self.speaker.embed(ref_wav, 24000)
            if self.cfg.eval.metrics.qwen_speaker:
                from qtts_sweep.model import modeling

                target["qwen"] = modeling.speaker_embedding(self.synth.loaded, ref_wav).float().cpu()
            self._target[clip] = target
        return self._target[clip]

    def ground_truth(self, path: str, target: dict[str, Any]) -> tuple[Any, float | None]:
        """A line's recording analysed once per process and target (every trial and seed scores against the
        same one): (its `analyze_reference` result, its similarity to the target speaker or None)."""
        key = (path, target.get("clip"))
        if key not in self._ground_truth:
            import soundfile as sf

            from qtts_sweep.metrics.audio import analyze_reference

            gt = sf.read(path, dtype="float32")[0]
            sim = None
            if self.speaker is not None:
                sim = float(self.speaker.similarity(self.speaker.embed(gt, 24000), target["resemblyzer"]))
            self._ground_truth[key] = (analyze_reference(gt, 24000), sim)
        return self._ground_truth[key]

    def audio_line(self, wav: Any, gt_path: str | None, text: str, target: dict[str, Any]) -> dict[str, float]:
        import numpy as np

        from qtts_sweep.metrics.audio import audio_metrics

        out: dict[str, float] = {}
        gt_sim = None
        if gt_path is not None:
            reference, gt_sim = self.ground_truth(gt_path, target)
            out.update(audio_metrics(wav, reference, 24000))
            out.update(REGISTRY.compute(wav, reference, 24000))  # registered metrics with their own function
        if self.speaker is not None:
            out["spk_sim"] = float(self.speaker.similarity(self.speaker.embed(wav, 24000), target["resemblyzer"]))
            if gt_sim is not None:
                out["gt_spk_sim"] = gt_sim
        if self.mos is not None:
            out.update(self.mos.predict(wav, 24000))
        if "qwen" in target:
            out["spk_sim_qwen"] = _qwen_similarity(self.synth, wav, target["qwen"])
        if self.asr is not None:
            from qtts_sweep.metrics.asr import word_error_rate

            out["wer"] = word_error_rate(text, self.asr(np.asarray(wav, dtype=np.float32)))
        if gt_path is not None:
            # a metric too noisy for a line this short (registry `min_speech_s`) is left out of the line, so it
            # counts neither in the mean nor in the line's paired score
            out["gt_speech_s"] = reference.speech_s
            for key in REGISTRY.unreliable_keys(reference.speech_s):
                out.pop(key, None)
        return out


def _qwen_similarity(synth: Synthesizer, wav: Any, target: Any) -> float:
    import torch

    from qtts_sweep.model import modeling

    if len(wav) < 2048:  # shorter than one mel window: no embedding, worst similarity
        return 0.0
    emb = modeling.speaker_embedding(synth.loaded, wav).float().cpu()
    sim = torch.nn.functional.cosine_similarity(emb, target, dim=0).item()
    return sim if math.isfinite(sim) else 0.0


def teacher_forced(synth: Synthesizer, lines: list[Line]) -> dict[str, dict[str, float]]:
    """Per line: teacher-forced loss and accuracy of both heads on its ground-truth codes, at the current scale."""
    import torch

    from qtts_sweep.model import modeling
    from qtts_sweep.model.loss import Example, compute_loss

    out = {}
    with torch.no_grad():
        for line in lines:
            if line.codes is None:
                continue
            role, text_ids = modeling.tokenize_line(synth.loaded.tts, line.text)
            ex = Example(role, text_ids, torch.tensor(line.codes, dtype=torch.long), synth.spk_embedding)
            r = compute_loss(synth.model, [ex], synth.cfg.train.subtalker_loss_weight)
            out[line.id] = {"tf_loss": r.loss.item(), "talker_acc": r.talker_acc, "code_acc": r.subtalker_acc}
    return out


def code_metrics(s: Synthesized) -> dict[str, float]:
    """Generated frames, the no-EOS flag (its mean over lines is the no-EOS rate) and the frame-count error."""
    from qtts_sweep.metrics.objective import frame_count_error

    gen = int(s.codes.shape[0])
    out = {"gen_frames": float(gen), "no_eos_rate": float(s.hit_cap)}
    if s.line.codes is not None:
        gt = len(s.line.codes)
        out["frame_ratio"] = gen / gt if gt else 0.0
        out["frame_count_error"] = frame_count_error(gen, gt)
    return out
