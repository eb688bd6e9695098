"""The production gate: the chosen (checkpoint, scale) pair on many unseen lines, before it becomes production.

A sweep scores a handful of held-out lines; a failure that hits 0.3-0.5% of generations (a line that never emits
EOS and babbles to its token cap) cannot show there. Here the pair speaks the first N lines of a shipped text file
(`production.stress`, default data/stress/lines.txt: short and long public-domain sentences) with the bundle's
own decoding and batch size, and three numbers are measured, each with an interval:

- no-EOS rate: lines that reached their token cap, with a Wilson score interval;
- duration-ratio p99: generated seconds / expected seconds (characters / `chars_per_second`), the 99th percentile
  over lines, with a bootstrap interval (a run-away line or a truncated one shows in the tail);
- speaker drift on long lines: 1 - cosine of the Resemblyzer embeddings of the first and the last third of each
  long line's audio, the mean with a bootstrap interval.

A limit refuses the promotion when the measured value is above it (the interval is reported beside it, not used
to refuse: with few lines it would refuse everything). Owns: the measurements, the rule and its message. Does not
own: generation (qtts_sweep.evaluate.synth), promotion's other steps (promote.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtts_sweep.config.schema import StressConfig
from qtts_sweep.util.problems import Problem, ValidationError

SR = 24000
BOOTSTRAP = 2000


class PromotionRefused(ValidationError):
    def __init__(self, problems: list[Problem]):
        super().__init__(problems, "production gate (promotion refused; nothing was written or registered)")


@dataclass
class StressReport:
    lines: int
    no_eos: int
    no_eos_rate: float
    no_eos_ci: tuple[float, float]
    duration_ratio_p99: float
    duration_ratio_p99_ci: tuple[float, float]
    long_lines: int
    speaker_drift: float | None
    speaker_drift_ci: tuple[float, float] | None
    confidence: float
    text_file: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def metrics(self) -> dict[str, float]:
        """For MLflow: stress_<name>, _lo and _hi."""
        out = {"stress_lines": float(self.lines), "stress_long_lines": float(self.long_lines)}
        for name, value, ci in (
            ("no_eos_rate", self.no_eos_rate, self.no_eos_ci),
            ("duration_ratio_p99", self.duration_ratio_p99, self.duration_ratio_p99_ci),
            ("speaker_drift", self.speaker_drift, self.speaker_drift_ci),
        ):
            if value is not None:
                out[f"stress_{name}"] = float(value)
                out[f"stress_{name}_lo"], out[f"stress_{name}_hi"] = (float(x) for x in ci)
        return out

    def describe(self) -> str:
        pct = f"{round(100 * self.confidence)}%"

        def ci(v: tuple[float, float]) -> str:
            return f"[{v[0]:.3g}, {v[1]:.3g}]"

        drift = (
            f"speaker drift on {self.long_lines} long lines {self.speaker_drift:.3f} "
            f"{pct} CI {ci(self.speaker_drift_ci)}"
            if self.speaker_drift is not None
            else "speaker drift: no long line"
        )
        return (
            f"production gate on {self.lines} unseen lines ({Path(self.text_file).name}): no-EOS {self.no_eos}/"
            f"{self.lines} = {self.no_eos_rate:.3f} {pct} CI {ci(self.no_eos_ci)}; duration-ratio p99 "
            f"{self.duration_ratio_p99:.3g} {pct} CI {ci(self.duration_ratio_p99_ci)}; {drift}"
        )


def read_lines(path: str | Path, n: int) -> list[str]:
    """The first `n` lines of a text file (blank lines and `#` comments skipped); all of them when fewer."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError(
            [Problem("production.stress.text_file", str(p), "no such file", "pass --text-file F or --stress 0")],
            "production gate",
        )
    lines = [t.strip() for t in p.read_text(encoding="utf-8").splitlines()]
    return [t for t in lines if t and not t.startswith("#")][:n]


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (sensible at k = 0 and at small n)."""
    if n == 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def bootstrap(values: list[float], stat, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values` (resampled with replacement, fixed seed)."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = np.array([stat(x[rng.integers(0, len(x), len(x))]) for _ in range(BOOTSTRAP)])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def p99(x: np.ndarray) -> float:
    return float(np.quantile(x, 0.99))


def speaker_drift(wav: np.ndarray, encoder: Any) -> float:
    """1 - cosine of the speaker embeddings of the first and the last third of one line's audio."""
    third = len(wav) // 3
    return 1.0 - encoder.similarity(encoder.embed(wav[:third], SR), encoder.embed(wav[len(wav) - third :], SR))


def measure(synth: Any, texts: list[str], decoding: Any, batch_size: int, cfg: StressConfig, source: str):
    """Speak `texts` with the loaded pair and measure the gate's three numbers."""
    from qtts_sweep.evaluate.synth import Line
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    outs = synth.generate([Line(f"stress{i:04d}", t) for i, t in enumerate(texts)], decoding, batch_size)
    n, no_eos = len(outs), sum(s.hit_cap for s in outs)
    ratios = [(len(s.wav) / SR) / (len(s.line.text) / cfg.chars_per_second) for s in outs]
    encoder = SpeakerSimilarity()
    drifts = [speaker_drift(s.wav, encoder) for s in outs if len(s.line.text) >= cfg.long_chars]
    c = cfg.confidence
    return StressReport(
        lines=n,
        no_eos=no_eos,
        no_eos_rate=no_eos / n,
        no_eos_ci=wilson(no_eos, n, c),
        duration_ratio_p99=p99(np.asarray(ratios)),
        duration_ratio_p99_ci=bootstrap(ratios, p99, c),
        long_lines=len(drifts),
        speaker_drift=float(np.mean(drifts)) if drifts else None,
        speaker_drift_ci=bootstrap(drifts, np.mean, c) if drifts else None,
        confidence=c,
        text_file=source,
    )


def problems(report: StressReport, cfg: StressConfig) -> list[Problem]:
    """Every limit the report is above, as rule / value / fix."""
    out: list[Problem] = []
    pct = f"{round(100 * report.confidence)}% CI"
    checks = (
        (
            "max_no_eos_rate",
            report.no_eos_rate,
            report.no_eos_ci,
            f"{report.no_eos} of {report.lines} lines never emitted EOS (ran to the token cap)",
            "pick another trial (`promote --trial N`), train further or lower the LoRA scale",
        ),
        (
            "max_duration_ratio_p99",
            report.duration_ratio_p99,
            report.duration_ratio_p99_ci,
            "the slowest 1% of lines run this many times longer than the text's expected duration",
            "pick another trial (`promote --trial N`); for a slow speaker, lower production.stress.chars_per_second",
        ),
        (
            "max_speaker_drift",
            report.speaker_drift,
            report.speaker_drift_ci,
            f"the voice changes between the start and the end of {report.long_lines} long lines",
            "pick another trial (`promote --trial N`) or a lower LoRA scale",
        ),
    )
    for name, value, ci, what, fix in checks:
        limit = getattr(cfg, name)
        if limit is None or value is None or value <= limit:
            continue
        rule = f"{what}: {value:.3g} ({pct} [{ci[0]:.3g}, {ci[1]:.3g}]) is above the limit {limit:g}"
        out.append(Problem(f"production.stress.{name}", round(float(value), 4), rule, fix + f" (or raise {name})"))
    return out
