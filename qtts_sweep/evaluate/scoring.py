"""Scores one (checkpoint, scale) on held-out lines: synthesis, code-level and audio-level metrics, objective.

`Scorer.score(cfg, dataset, point)` is the one scoring function: the sweep worker (trials and the base model),
promotion (the test split), `qtts-sweep synth` and the benchmarks all call it, so the same inputs give the same
numbers whoever asks. Results are cached under `runs/evals/<key>/` where the key hashes (training key, epoch,
scale, the eval config including decoding and the lines): evaluating the same point again costs nothing and
returns the same numbers. Below that, each generation batch's scored rows are cached per (pair, lines of the
batch, seed) (line_cache.py), so scoring more lines of a pair synthesizes only the lines not scored before.

The codec ceiling: every generation goes through the speech tokenizer's decoder, the ground truth does not. So
each line's ground-truth codes (already encoded by `prepare`) are decoded and scored against the recording exactly
like a generation, once per (dataset, codec, metric settings, lines), cached under `runs/evals/ceiling-<key>/`.
Every result carries it: `ceiling_<metric>` keys in the summary (so MLflow and the report show it beside the
trial's own) and a `ceiling` block (per-line rows, wav paths) in result.json; with
`eval.objective.reference: ceiling` the quality terms are scored relative to it (docs/metrics.md).

Not here: generation (synth.py), the metric definitions (qtts_sweep.metrics), Optuna, MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config, EvalConfig
from qtts_sweep.evaluate.suite import MetricSuite, code_metrics, teacher_forced
from qtts_sweep.evaluate.synth import Line, Synthesized, Synthesizer
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

RESULT_FILE = "result.json"
CEILING_PREFIX = "ceiling_"  # summary keys of the codec ceiling's aggregated metrics


@dataclass
class EvalResult:
    key: str
    dir: Path
    per_line: list[dict[str, Any]]  # one row per (line, seed): id, seed, text, wav, metrics
    summary: dict[str, float]  # aggregated over lines (mean, `<name>_std`)
    objective: float
    cached: bool = False
    backends: dict[str, str] = field(default_factory=dict)
    ceiling: dict[str, Any] | None = None  # {"key", "dir", "per_line", "summary"} of the codec round trip
    synthesized: int = 0  # (line, seed) generations this call ran (0: every row came from a cache)


@dataclass
class Ceiling:
    """The ground truth's codec round trip scored against the ground truth, per line and aggregated."""

    key: str
    dir: Path
    per_line: list[dict[str, Any]]  # id, text, wav (relative to dir), metrics
    summary: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dir": str(self.dir), "per_line": self.per_line, "summary": self.summary}

    def restricted(self, lines: list[Line]) -> Ceiling:
        """The same ceiling over a subset of its lines (rows filtered, summary re-aggregated). The key stays the
        full ceiling's: with the lines, which the evaluation key holds anyway, it identifies the numbers."""
        from qtts_sweep.metrics.objective import aggregate_lines

        ids = {ln.id for ln in lines}
        rows = [r for r in self.per_line if r["id"] in ids]
        return Ceiling(self.key, self.dir, rows, aggregate_lines([r["metrics"] for r in rows]))


def held_out_lines(dataset: Any, split: str, max_lines: int) -> list[Line]:
    """The first `max_lines` lines of a prepared split, in id order (a stable, documented choice)."""
    rows = sorted(dataset.splits[split], key=lambda r: r.id)[:max_lines]
    if not rows:
        raise ValueError(f"split `{split}` of {dataset.dir} is empty: nothing to evaluate")
    return [Line(r.id, r.text, r.audio, r.audio_codes) for r in rows]


def eval_key(
    training_key: str,
    epoch: int | None,
    scale: float,
    ev: EvalConfig,
    lines: list[Line],
    ceiling: str | None = None,
) -> str:
    """Cache key of one evaluation. `metrics` is the metric registry's digest: registering, removing or
    redefining a metric (its `version`, worst value, goodness or default weight) makes cached results stale.
    `ceiling` is the codec ceiling's key: the objective is scored relative to it."""
    conf = dataclasses.asdict(ev)
    for k in ("epoch", "lora_scale", "max_lines"):  # given explicitly / by the lines themselves
        conf.pop(k, None)
    blob = json.dumps(
        {
            "metrics": REGISTRY.digest(),
            "train": training_key,
            "epoch": epoch,
            "scale": round(scale, 6),
            "eval": conf,
            "lines": [[ln.id, ln.text] for ln in lines],
            "ceiling": ceiling,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def ceiling_key(
    dataset_hash: str,
    codec: str,
    ev: EvalConfig,
    lines: list[Line],
    talker: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """Cache key of a codec ceiling: the data (its hash covers the reference clip), the speech tokenizer, the
    metric settings and registry, the lines, and what the numbers depend on beyond them: the dtype and device
    type the decoder ran in, and the talker's identity when a metric uses its speaker encoder
    (`eval.metrics.qwen_speaker`). Decoding, scale and objective weights do not enter: no generation happens."""
    blob = json.dumps(
        {
            "metrics": REGISTRY.digest(),
            "dataset": dataset_hash,
            "codec": codec,
            "metric_settings": dataclasses.asdict(ev.metrics),
            "lines": [[ln.id, ln.text] for ln in lines],
            "talker": talker if ev.metrics.qwen_speaker else None,
            "dtype": dtype,
            "device": device,
        },
        sort_keys=True,
    )
    return "ceiling-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def base_training_key(model_id: str, dtype: str, device: str, dataset_hash: str) -> str:
    """The "training key" of the base model (no adapter) in eval cache keys: which talker (content identity),
    in which dtype and on which device type, speaking with which dataset's reference clip."""
    blob = json.dumps([model_id, dtype, device, dataset_hash])
    return f"{BASE_KEY}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def device_type(device: str) -> str:
    """`cuda:1` -> `cuda`: results depend on the kind of device, not on which one of a kind."""
    return str(device).split(":", 1)[0]


def codec_ceiling(cfg: Config, synth: Synthesizer, suite: MetricSuite, lines: list[Line], ref_wav: Any, key: str):
    """Decode each line's ground-truth codes and score the result against the recording (cached by `key`).

    Lines without codes or audio are left out. Only the audio-level metrics apply: frame count and EOS are exact
    by construction and teacher forcing has no meaning for a recording.
    """
    import soundfile as sf
    import torch

    from qtts_sweep.metrics.objective import aggregate_lines
    from qtts_sweep.model import modeling
    from qtts_sweep.util.fsio import atomic_folder
    from qtts_sweep.util.integrity import apply_modes, write_manifest

    final = Path(cfg.paths.runs_dir) / "evals" / key
    cached = load_ceiling(cfg.paths.runs_dir, key)
    if cached is not None:
        return cached
    target = suite.target(ref_wav)
    rows, wavs = [], []
    for line in lines:
        if line.codes is None or line.audio is None:
            continue
        # one line at a time: the decoder's memory grows with length, and the result must not depend on batching
        decoded, _ = modeling.decode_codes(synth.loaded, [torch.tensor(line.codes, dtype=torch.long)])
        wavs.append(decoded[0])
        metrics = suite.audio_line(decoded[0], line.audio, line.text, target)
        rows.append({"id": line.id, "text": line.text, "wav": f"wavs/{line.id}.wav", "metrics": metrics})
    summary = aggregate_lines([r["metrics"] for r in rows])
    # content-addressed: a second writer of this key (another driver) computed the same thing and keeps the first
    with atomic_folder(final, replace=False) as tmp:
        (tmp / "wavs").mkdir()
        for row, wav in zip(rows, wavs, strict=True):
            sf.write(tmp / row["wav"], wav, 24000, subtype="FLOAT")
        payload = {"per_line": rows, "summary": summary, "backends": suite.backends}
        (tmp / RESULT_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        write_manifest(tmp)
        apply_modes(tmp)
    return Ceiling(key, final, rows, summary)


def _load_entry(runs_dir: str, key: str, what: str, build: Any) -> Any | None:
    """A cached entry (`runs/evals/<key>/`: wavs + result.json under a manifest) read back with `build(folder,
    result)`, or None when there is none. Like every store entry it is checked against its manifest; a damaged one
    (or one from before manifests, or one whose result.json lacks what `build` reads) is moved aside (logged) and
    None is returned, so the caller recomputes it."""
    from qtts_sweep.util.integrity import CorruptEntry, quarantine, verified_bytes, verify_folder

    d = Path(runs_dir) / "evals" / key
    if not d.is_dir():
        return None
    try:
        verify_folder(d)
        try:
            entry = build(d, json.loads(verified_bytes(d, RESULT_FILE).decode("utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptEntry(d / RESULT_FILE, f"is not {what} ({exc!r})") from exc
        missing = [row["wav"] for row in entry.per_line if not (d / row["wav"]).is_file()]
        if missing:
            raise CorruptEntry(d / missing[0], "is missing (listed in result.json, not in the manifest)")
    except CorruptEntry as exc:
        moved = quarantine(exc, d)
        log.warning(f"cached {what.removeprefix('a ').removeprefix('an ')} {moved}; it is recomputed. Fix: none needed")
        return None
    return entry


def load_ceiling(runs_dir: str, key: str) -> Ceiling | None:
    """The cached codec ceiling of `key` (see `_load_entry`), or None."""
    return _load_entry(runs_dir, key, "a codec ceiling", lambda d, p: Ceiling(key, d, p["per_line"], p["summary"]))


def _write_result(final: Path, rows: list[dict], wavs: list[Any], payload: dict) -> None:
    """Wavs + result.json, listed with their sha256 in the entry's manifest (checked by `load_cached`)."""
    import soundfile as sf

    from qtts_sweep.util.fsio import atomic_folder
    from qtts_sweep.util.integrity import apply_modes, write_manifest

    with atomic_folder(final) as tmp:
        (tmp / "wavs").mkdir()
        for row, wav in zip(rows, wavs, strict=True):
            sf.write(tmp / row["wav"], wav, 24000, subtype="FLOAT")
        (tmp / RESULT_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        write_manifest(tmp)
        apply_modes(tmp)


def load_cached(runs_dir: str, key: str) -> EvalResult | None:
    """The cached evaluation result of `key` (see `_load_entry`), or None."""

    def build(d: Path, p: dict) -> EvalResult:
        return EvalResult(
            key, d, p["per_line"], p["summary"], p["objective"], True, p["backends"], ceiling=p.get("ceiling")
        )

    return _load_entry(runs_dir, key, "an evaluation result", build)


def _score_rows(synthesized: list[Synthesized], tf: dict, suite: MetricSuite, target: Any) -> list[dict]:
    """One result row per synthesized (line, seed): code-level, teacher-forced and audio metrics."""
    rows = []
    for s in synthesized:
        metrics = {
            **code_metrics(s),
            **tf.get(s.line.id, {}),
            **suite.audio_line(s.wav, s.line.audio, s.line.text, target),
        }
        rows.append(
            {
                "id": s.line.id,
                "seed": s.seed_index,
                "text": s.line.text,
                "wav": f"wavs/{s.line.id}_s{s.seed_index}.wav",
                "frames": int(s.codes.shape[0]),
                "max_new_tokens": s.max_new_tokens,
                "codes": s.codes.tolist(),
                "metrics": metrics,
            }
        )
    return rows


def _lines_through_cache(
    cfg: Config,
    synth: Synthesizer,
    suite: MetricSuite,
    lines: list[Line],
    ref_wav: Any,
    pair: tuple,
    use_cache: bool = True,
) -> tuple[list[dict], list[Any], int]:
    """Rows and wavs of every (line, seed), seed-major then line order, each generation batch read from the
    per-line cache (line_cache.py) or synthesized, scored and stored there; also how many were synthesized.

    Batches are the same `eval.batch_size` blocks of the line order that one `generate` call over all lines forms,
    so a line's row is the same whichever prefix of the lines asked for it. `use_cache=False` recomputes every
    batch (and overwrites its entry)."""
    from qtts_sweep.evaluate.line_cache import LineCache, pair_key

    training_key, epoch, scale, checkpoint = pair
    cache = LineCache(cfg.paths.runs_dir, pair_key(training_key, epoch, scale, cfg.eval))
    bs = cfg.eval.batch_size
    rows: list[dict] = []
    wavs: list[Any] = []
    fresh = 0
    ready = False
    for k in range(cfg.eval.num_seeds):
        for start in range(0, len(lines), bs):
            batch = lines[start : start + bs]
            hit = cache.get(batch, k) if use_cache else None
            if hit is None:
                if not ready:
                    synth.use(checkpoint, scale)
                    target, ready = suite.target(ref_wav), True
                synthesized = synth.generate(batch, cfg.eval.decoding, bs, seed_index=k)
                scored = _score_rows(synthesized, teacher_forced(synth, batch), suite, target)
                hit = (scored, [s.wav for s in synthesized])
                cache.put(batch, k, *hit)
                fresh += len(batch)
            rows += hit[0]
            wavs += hit[1]
    return rows, wavs, fresh


# ~70 lines: synthesize, score every line, aggregate, apply the objective and write the cache, in that order;
# each step is one call, kept together so the cached payload and the returned result cannot drift apart.
def evaluate(
    cfg: Config,
    synth: Synthesizer,
    suite: MetricSuite,
    lines: list[Line],
    ref_wav: Any,
    training_key: str,
    epoch: int | None,
    scale: float,
    checkpoint: Path | None,
    use_cache: bool = True,
    ceiling: Ceiling | None = None,
) -> EvalResult:
    """Synthesize `lines` at (checkpoint, scale) `eval.num_seeds` times, score them, aggregate, cache.

    `use_cache=False` recomputes and overwrites (the no-reuse side of `bench sweep`). `ceiling`: the lines' codec
    ceiling, reported beside the trial's metrics and, under `reference: ceiling`, the quality terms' reference.
    """
    from qtts_sweep.metrics.objective import aggregate_lines, composite_score, constraint_violations

    key = eval_key(training_key, epoch, scale, cfg.eval, lines, ceiling.key if ceiling else None)
    cached = load_cached(cfg.paths.runs_dir, key) if use_cache else None
    if cached is not None:
        return cached

    pair = (training_key, epoch, scale, checkpoint)
    rows, wavs, fresh = _lines_through_cache(cfg, synth, suite, lines, ref_wav, pair, use_cache)
    summary = aggregate_lines([r["metrics"] for r in rows])
    speech = [r["metrics"]["gt_speech_s"] for r in rows if "gt_speech_s" in r["metrics"]]
    if speech:  # which length-limited terms any line could measure (objective._too_short)
        summary["gt_speech_s_max"] = max(speech)
    ceiling_summary = ceiling.summary if ceiling else None
    weights = cfg.eval.objective.objective_weights()
    objective = composite_score(summary, weights, summary.get("gt_spk_sim"), ceiling_summary)
    violations = constraint_violations(summary, cfg.eval.objective.constraint_limits())
    summary.update({f"constraint_{k}": v for k, v in violations.items()})
    if ceiling_summary:
        summary.update({CEILING_PREFIX + k: v for k, v in ceiling_summary.items() if not k.endswith("_std")})
    payload = {
        "per_line": rows,
        "summary": summary,
        "objective": objective,
        "backends": suite.backends,
        "epoch": epoch,
        "scale": scale,
        "training_key": training_key,
        "ceiling": ceiling.as_dict() if ceiling else None,
    }
    final = Path(cfg.paths.runs_dir) / "evals" / key
    _write_result(final, rows, wavs, payload)
    return EvalResult(key, final, rows, summary, objective, False, suite.backends, payload["ceiling"], fresh)


BASE_KEY = "base"  # training key of the base model (no adapter) in eval cache keys


@dataclass(frozen=True)
class Point:
    """What is scored: a training key's checkpoint at an epoch, at a LoRA scale; or the base model (no adapter)."""

    training_key: str
    epoch: int | None
    checkpoint: Path | None
    scale: float

    @classmethod
    def base(cls) -> Point:
        return cls(BASE_KEY, None, None, 0.0)


def _model_identity(cfg: Config) -> tuple:
    """Which loaded model a config can be scored on: same base model settings and same LoRA layer layout."""
    return (dataclasses.astuple(cfg.model), dataclasses.astuple(cfg.lora))


class Scorer:
    """Scores (checkpoint, scale) points: one loaded model and metric suite per process, reused across points.

    The synthesizer and metric backends are built on first use and rebuilt only when the base model or the LoRA
    layout changes (`lora.r`, targets); a new checkpoint or scale never reloads anything. The loaded model's
    content identity (a hash of its folder, part of the ceiling's and the base model's keys) is computed once per
    load, not for every point.
    """

    def __init__(self) -> None:
        self.synth: Synthesizer | None = None
        self.suite: MetricSuite | None = None
        self._identity: tuple | None = None
        self._ref: dict[str, Any] = {}
        self._source_id: str | None = None  # model_identity of the loaded model's folder

    def ensure(self, cfg: Config) -> Synthesizer:
        """The synthesizer for `cfg` (loaded now if the model or LoRA layout differs from the current one)."""
        ident = _model_identity(cfg)
        if ident != self._identity:
            self.synth = Synthesizer(cfg)
            self.suite = MetricSuite(cfg, self.synth)
            self._identity = ident
            self._source_id = None
        else:
            self.synth.cfg = cfg
            self.suite.cfg = cfg
        return self.synth

    def adapter_changed(self) -> None:
        """The model's adapter was trained in place: the next point must load its checkpoint even if it was current."""
        if self.synth is not None:
            self.synth.checkpoint = None

    def reference(self, path: str) -> Any:
        if path not in self._ref:
            from qtts_sweep.model import modeling

            self._ref[path] = modeling.load_audio_24k(path)
        return self._ref[path]

    def score(
        self,
        cfg: Config,
        dataset: Any,
        point: Point,
        split: str | None = None,
        use_cache: bool = True,
        n_lines: int | None = None,
    ) -> EvalResult:
        """Score `point` on the first `eval.max_lines` lines of `split` (default `eval.split`) of `dataset`.

        The base model gets the speaker embedding of the dataset's reference clip; a checkpoint brings its own.
        `use_cache=False` recomputes and overwrites (the no-reuse side of `bench sweep`). `n_lines`: only the
        first n of those lines (multi-fidelity); their rows come from the per-line cache where a shorter prefix
        already scored them, and the codec ceiling is the full lines' one restricted to these lines.
        """
        from qtts_sweep.model import modeling

        synth = self.ensure(cfg)
        ref_wav = self.reference(dataset.ref_audio)
        training_key = point.training_key
        if point.checkpoint is None:
            synth.use(None, 0.0, modeling.speaker_embedding(synth.loaded, ref_wav))
            if training_key == BASE_KEY:
                training_key = self.base_key(dataset)
        lines = held_out_lines(dataset, split or cfg.eval.split, cfg.eval.max_lines)
        ceiling = self.ceiling(cfg, dataset, lines, ref_wav)
        if n_lines is not None and n_lines < len(lines):
            lines = lines[:n_lines]
            ceiling = ceiling.restricted(lines)
        return evaluate(
            cfg,
            synth,
            self.suite,
            lines,
            ref_wav,
            training_key,
            point.epoch,
            point.scale,
            point.checkpoint,
            use_cache=use_cache,
            ceiling=ceiling,
        )

    def ceiling(self, cfg: Config, dataset: Any, lines: list[Line], ref_wav: Any) -> Ceiling:
        """The codec ceiling of `lines` (computed once per dataset, codec, metric settings and lines; cached)."""
        from qtts_sweep.data.codes import tokenizer_identity

        loaded = self.synth.loaded
        talker = self._model_id() if cfg.eval.metrics.qwen_speaker else None
        codec = tokenizer_identity(loaded.source)
        key = ceiling_key(dataset.hash, codec, cfg.eval, lines, talker, str(loaded.dtype), device_type(loaded.device))
        return codec_ceiling(cfg, self.synth, self.suite, lines, ref_wav, key)

    def _model_id(self) -> str:
        """`model_identity` of the loaded model's folder, hashed once per load (the weights in memory are the
        ones read then, whatever happens to the folder later)."""
        from qtts_sweep.train.store import model_identity

        if self._source_id is None:
            self._source_id = model_identity(self.synth.loaded.source)
        return self._source_id

    def base_key(self, dataset: Any) -> str:
        """`base_training_key` of the loaded model for `dataset`."""
        loaded = self.synth.loaded
        return base_training_key(self._model_id(), str(loaded.dtype), device_type(loaded.device), dataset.hash)
