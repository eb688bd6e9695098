"""Typed config schemas: one dataclass per Hydra config group, registered in Hydra's ConfigStore.

Each dataclass lists its fields (with `choices`/`help` metadata) and a `problems()` method returning every rule
its values break, as `Problem`s that carry the key path, the value, the rule and the fix. Whether a value fits its
field (type, choices) is `value_problems`, the one such check: the loader runs it on the composed YAML tree and
`__post_init__` on every schema object built in code (types and choices first, then the rules), raising every
problem together, so a schema object can never exist in an invalid state. Cross-group rules live on `Config`.

This module is pure: no torch, no Hydra composition (see `qtts_sweep.config.loader` for loading).

Longer than the ~450-line guideline: one dataclass per config group, each with the rules of its own values next
to its fields, so a reader finds a key and its checks in one place; splitting by group would spread the shared
`Problem` machinery over many small files without making any one rule easier to find.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.objective import ConstraintLimits, ObjectiveWeights
from qtts_sweep.metrics.paired import TIE_BREAK_DEFAULT, TIE_BREAK_RULES
from qtts_sweep.util.problems import Problem, ValidationError


class ConfigError(ValidationError):
    def __init__(self, problems: list[Problem], source: str = "config"):
        super().__init__(problems, source)


def choice(default: str, choices: tuple[str, ...], help: str = "") -> Any:
    return field(default=default, metadata={"choices": choices, "help": help})


def _check(cond: bool, out: list[Problem], key: str, value: Any, rule: str, fix: str) -> None:
    if not cond:
        out.append(Problem(key, value, rule, fix))


def type_ok(value: Any, tp: Any) -> bool:
    """Whether `value` fits the schema type hint `tp` (bool is not an int; an int is a float)."""
    import types

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list | ListConfig) and all(type_ok(v, item) for v in value)
    return True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _example(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING and f.default != "???":
        return f.default
    return "..."


def value_problems(key: str, value: Any, f: dataclasses.Field, tp: Any) -> list[Problem]:
    """The one check of a leaf value against its schema field: its type, then its `choices`. Used on the composed
    YAML tree (loader.check_node) and on every schema object built in code (`_Validated.__post_init__`)."""
    if not type_ok(value, tp):
        shown = OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
        fix = f"give a {_type_name(tp)} value, e.g. {key}={_example(f)}"
        return [Problem(key, shown, f"must be of type {_type_name(tp)}", fix)]
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        return [Problem(key, value, f"must be one of {list(choices)}", f"e.g. {key}={choices[0]}")]
    return []


def field_problems(obj: Any, prefix: str) -> list[Problem]:
    """`value_problems` of every leaf of a schema object, nested sections included (a nested group with its own
    `_group` checked itself when it was built)."""
    out: list[Problem] = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            if dataclasses.is_dataclass(value) and getattr(value, "_group", None) is None:
                out += field_problems(value, key)
            continue
        if isinstance(value, str) and value == MISSING:
            continue  # filled in by interpolation when composed; a required one is the loader's to report
        out += value_problems(key, value, f, tp)
    return out


class _Validated:
    """Mixin: `problems(prefix)` collects rule violations; construction raises them all at once.

    Nested sections (`data.split`, `eval.decoding`) set `_group = None`: their parent reports their problems
    together with its own.
    """

    _group: str | None = None

    def problems(self, prefix: str | None = None) -> list[Problem]:
        return []

    def __post_init__(self) -> None:
        if self._group is None:
            return
        found = field_problems(self, self._group)  # types and choices first: rules may compare the values
        if found:
            raise ConfigError(found)
        found = self.problems(self._group)
        if found:
            raise ConfigError(found)


@dataclass
class ModelConfig(_Validated):
    """Which Qwen3-TTS Base model to fine-tune, and how to load it."""

    _group = "model"
    name: str = MISSING
    # Hub id (e.g. Qwen/Qwen3-TTS-12Hz-1.7B-Base) or a local model folder.
    source: str = MISSING
    # True: `source` is the tiny preset folder, created from `tiny_seed` on first use (never downloads).
    tiny: bool = False
    tiny_seed: int = 0
    local_files_only: bool = False
    dtype: str = choice("auto", ("auto", "float32", "bfloat16", "float16"), "auto: bf16 on GPU, fp32 on CPU")
    attn_implementation: str = choice("auto", ("auto", "eager", "sdpa", "flash_attention_2"))
    device: str = "auto"

    def problems(self, prefix: str | None = "model") -> list[Problem]:
        out: list[Problem] = []
        _check(
            bool(self.source.strip()),
            out,
            f"{prefix}.source",
            self.source,
            "must not be empty",
            "give a hub id such as Qwen/Qwen3-TTS-12Hz-1.7B-Base or a local model folder",
        )
        _check(
            self.tiny_seed >= 0,
            out,
            f"{prefix}.tiny_seed",
            self.tiny_seed,
            "must be >= 0",
            "use a non-negative seed, e.g. model.tiny_seed=0",
        )
        _check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            out,
            f"{prefix}.device",
            self.device,
            "must be auto, cpu or cuda[:N]",
            "e.g. model.device=cuda:0",
        )
        return out


@dataclass
class SplitConfig(_Validated):
    """Deterministic train/val/test assignment by a hash of the normalized text."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05
    min_val: int = 3
    min_test: int = 3
    salt: str = "qtts-sweep"

    def problems(self, prefix: str | None = "data.split") -> list[Problem]:
        out: list[Problem] = []
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            _check(
                0.0 < v < 0.5,
                out,
                f"{prefix}.{name}",
                v,
                "must be in (0, 0.5)",
                f"use a small held-out share, e.g. {prefix}.{name}=0.05",
            )
        _check(
            self.val_fraction + self.test_fraction < 0.9,
            out,
            f"{prefix}.val_fraction",
            self.val_fraction,
            "val + test fractions must leave at least 10% for training",
            "lower the held-out fractions",
        )
        for name in ("min_val", "min_test"):
            v = getattr(self, name)
            _check(
                v >= 1,
                out,
                f"{prefix}.{name}",
                v,
                "must be >= 1 (an empty split cannot be scored)",
                f"set {prefix}.{name}=3",
            )
        return out


@dataclass
class DataConfig(_Validated):
    """A single-speaker dataset: where it is, how to read it, how to check and split it."""

    _group = "data"
    name: str = MISSING
    format: str = choice("jsonl", ("jsonl", "ljspeech"), "jsonl: upstream manifest; ljspeech: metadata.csv")
    manifest: str | None = None  # jsonl: path to the manifest (audio/ref_audio paths relative to it)
    root: str | None = None  # ljspeech: folder holding metadata.csv and wavs/
    # One reference clip for the speaker embedding (upstream recommends one fixed clip). A path; None: the
    # manifest's `ref_audio` of the first row; `auto` (ljspeech's default, which has no reference): the clean
    # training-split clip of median duration (qtts_sweep.data.prepare.auto_reference), named in the summary.
    ref_audio: str | None = None
    sample_rate: int = 24000
    min_duration_s: float = 0.5
    max_duration_s: float = 20.0
    max_clipped_fraction: float = 0.01
    # Peak below this (dBFS) counts as silent audio.
    silence_peak_dbfs: float = -50.0
    # strict: stop with every problem listed (exit 2); lenient: skip bad rows and list them.
    strict: bool = True
    # Clips whose voice is an outlier against the dataset's own (qtts_sweep.data.speaker_check). warn: listed in
    # the summary, kept; error: a problem like a bad row (so `strict` decides: stop, or skip and list); off.
    speaker_check: str = choice("warn", ("warn", "error", "off"), "outlier voices: warn, error (a bad row), off")
    codec_batch_size: int = 8
    split: SplitConfig = field(default_factory=SplitConfig)

    def problems(self, prefix: str | None = "data") -> list[Problem]:
        out: list[Problem] = []
        _check(
            self.sample_rate == 24000,
            out,
            f"{prefix}.sample_rate",
            self.sample_rate,
            "must be 24000: the 12 Hz codec and speaker encoder only accept 24 kHz",
            "leave it at 24000; `qtts-sweep prepare` resamples any input rate",
        )
        if self.format == "jsonl":
            _check(
                bool(self.manifest),
                out,
                f"{prefix}.manifest",
                self.manifest,
                "is required for data.format=jsonl",
                "pass data=jsonl data.manifest=/path/to/train.jsonl",
            )
        if self.format == "ljspeech":
            _check(
                bool(self.root),
                out,
                f"{prefix}.root",
                self.root,
                "is required for data.format=ljspeech",
                "pass data=ljspeech data.root=/path/to/LJSpeech-1.1",
            )
        _check(
            0 < self.min_duration_s < self.max_duration_s,
            out,
            f"{prefix}.min_duration_s",
            self.min_duration_s,
            f"must be > 0 and below data.max_duration_s ({self.max_duration_s})",
            "e.g. data.min_duration_s=0.5 data.max_duration_s=20",
        )
        _check(
            0 <= self.max_clipped_fraction < 1,
            out,
            f"{prefix}.max_clipped_fraction",
            self.max_clipped_fraction,
            "must be in [0, 1)",
            "e.g. 0.01 (1% of samples at full scale)",
        )
        _check(
            self.codec_batch_size >= 1,
            out,
            f"{prefix}.codec_batch_size",
            self.codec_batch_size,
            "must be >= 1",
            "e.g. data.codec_batch_size=8",
        )
        out += self.split.problems(f"{prefix}.split")
        return out


LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig(_Validated):
    """Which projections get a LoRA adapter, with what rank/alpha/dropout."""

    _group = "lora"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_PROJECTIONS))
    # talker_and_code_predictor: what the seed's run adapted (peft suffix names match both);
    # talker: only the talker transformer's layers.
    scope: str = choice("talker_and_code_predictor", ("talker_and_code_predictor", "talker"))

    def problems(self, prefix: str | None = "lora") -> list[Problem]:
        out: list[Problem] = []
        _check(self.r >= 1, out, f"{prefix}.r", self.r, "LoRA rank must be >= 1", "e.g. lora.r=16")
        _check(self.alpha > 0, out, f"{prefix}.alpha", self.alpha, "must be > 0", "e.g. lora.alpha=32 (2 x r)")
        _check(
            0 <= self.dropout < 1,
            out,
            f"{prefix}.dropout",
            self.dropout,
            "must be in [0, 1)",
            "e.g. lora.dropout=0.05",
        )
        _check(
            len(self.target_modules) > 0,
            out,
            f"{prefix}.target_modules",
            self.target_modules,
            "must name at least one projection",
            f"choose from {list(LORA_PROJECTIONS)}",
        )
        bad = [m for m in self.target_modules if m not in LORA_PROJECTIONS]
        _check(
            not bad,
            out,
            f"{prefix}.target_modules",
            bad,
            "unknown projection name(s)",
            f"choose from {list(LORA_PROJECTIONS)}",
        )
        return out


@dataclass
class TrainConfig(_Validated):
    """How one training run goes. `max_epochs` is part of the training identity; `epochs` is not."""

    _group = "train"
    lr: float = 2e-6
    max_epochs: int = 10  # horizon of the LR schedule: checkpoint e is the same whatever epoch a trial stops at
    epochs: int = 10  # how far this call trains now (<= max_epochs)
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    scheduler: str = choice("linear", ("linear", "cosine", "constant"))
    warmup_ratio: float = 0.0
    # Weight of the code-predictor (groups 1..15) loss: upstream 0.3, a popular LoRA fork 1.0.
    subtalker_loss_weight: float = 0.3
    max_steps_per_epoch: int | None = None  # debug presets cap an epoch
    seed: int = 0

    def problems(self, prefix: str | None = "train") -> list[Problem]:
        out: list[Problem] = []
        _check(
            self.lr > 0,
            out,
            f"{prefix}.lr",
            self.lr,
            "learning rate must be > 0",
            "e.g. train.lr=2e-6 (1.7B Base with LoRA)",
        )
        _check(self.lr < 1, out, f"{prefix}.lr", self.lr, "learning rate must be < 1", "e.g. train.lr=2e-6")
        _check(
            self.max_epochs >= 1,
            out,
            f"{prefix}.max_epochs",
            self.max_epochs,
            "must be >= 1",
            "e.g. train.max_epochs=10",
        )
        _check(
            1 <= self.epochs <= max(self.max_epochs, 1),
            out,
            f"{prefix}.epochs",
            self.epochs,
            f"must be in [1, train.max_epochs={self.max_epochs}]",
            "lower train.epochs or raise train.max_epochs (which changes the LR schedule)",
        )
        _check(self.batch_size >= 1, out, f"{prefix}.batch_size", self.batch_size, "must be >= 1", "e.g. 4")
        _check(self.grad_accum >= 1, out, f"{prefix}.grad_accum", self.grad_accum, "must be >= 1", "e.g. 1")
        _check(
            self.max_grad_norm > 0,
            out,
            f"{prefix}.max_grad_norm",
            self.max_grad_norm,
            "must be > 0",
            "e.g. train.max_grad_norm=1.0",
        )
        _check(
            self.weight_decay >= 0,
            out,
            f"{prefix}.weight_decay",
            self.weight_decay,
            "must be >= 0",
            "e.g. 0.01",
        )
        _check(
            0 <= self.warmup_ratio < 1,
            out,
            f"{prefix}.warmup_ratio",
            self.warmup_ratio,
            "must be in [0, 1)",
            "e.g. 0.05",
        )
        _check(
            self.subtalker_loss_weight >= 0,
            out,
            f"{prefix}.subtalker_loss_weight",
            self.subtalker_loss_weight,
            "must be >= 0",
            "0.3 (upstream) or 1.0",
        )
        _check(
            self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
            out,
            f"{prefix}.max_steps_per_epoch",
            self.max_steps_per_epoch,
            "must be null or >= 1",
            "e.g. train.max_steps_per_epoch=2 (debug)",
        )
        return out


@dataclass
class DecodingConfig(_Validated):
    """Decoding is part of the evaluation: production sampling with a fixed seed per line by default."""

    mode: str = choice("sample", ("sample", "greedy"))
    seed: int = 1234
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    # max_new_tokens = frames_per_char * len(text) + min_frames: a line that hits it is flagged "no EOS".
    frames_per_char: float = 1.5
    min_frames: int = 25

    def problems(self, prefix: str | None = "eval.decoding") -> list[Problem]:
        out: list[Problem] = []
        _check(self.temperature > 0, out, f"{prefix}.temperature", self.temperature, "must be > 0", "e.g. 0.9")
        _check(self.top_k >= 1, out, f"{prefix}.top_k", self.top_k, "must be >= 1", "e.g. 50")
        _check(0 < self.top_p <= 1, out, f"{prefix}.top_p", self.top_p, "must be in (0, 1]", "e.g. 1.0")
        _check(
            self.repetition_penalty > 0,
            out,
            f"{prefix}.repetition_penalty",
            self.repetition_penalty,
            "must be > 0",
            "1.0 disables it; production uses 1.05",
        )
        _check(
            self.frames_per_char > 0,
            out,
            f"{prefix}.frames_per_char",
            self.frames_per_char,
            "must be > 0",
            "e.g. 1.5 (12.5 frames/s, ~15 chars/s of speech, with headroom)",
        )
        _check(self.min_frames >= 1, out, f"{prefix}.min_frames", self.min_frames, "must be >= 1", "e.g. 25")
        return out


@dataclass
class MetricsConfig(_Validated):
    """Metric backends. Always-on ones run offline on CPU; optional ones load local weights, never download."""

    speaker: str = choice("resemblyzer", ("resemblyzer", "none"), "speaker similarity (weights ship in the wheel)")
    mos: str = choice("dnsmos", ("dnsmos", "none"), "MOS predictor (DNSMOS, weights ship in the wheel)")
    qwen_speaker: bool = True  # also score similarity with the base model's own speaker encoder
    asr_backend: str = choice("none", ("none", "whisper", "faster_whisper"), "WER from a local Whisper folder")
    asr_model_path: str | None = None

    def problems(self, prefix: str | None = "eval.metrics") -> list[Problem]:
        out: list[Problem] = []
        if self.asr_backend != "none":
            import os

            ok = bool(self.asr_model_path) and os.path.isdir(str(self.asr_model_path))
            _check(
                ok,
                out,
                f"{prefix}.asr_model_path",
                self.asr_model_path,
                f"must be an existing local model folder for asr_backend={self.asr_backend} (never downloaded)",
                "point it at your Whisper folder, or set eval.metrics.asr_backend=none",
            )
        return out


@dataclass
class ObjectiveConfig(_Validated):
    """The composite objective (`qtts_sweep.metrics.objective.composite_score`): term weights and constraints.

    `weights` ({metric key: weight}) and `constraints` ({`max_<metric key>`: limit or null}) default to what the
    metric registry declares (`qtts_sweep.metrics.catalog.REGISTRY`, documented in docs/metrics.md); a config
    sets only what it changes, e.g. `eval.objective.weights.mcd_db=0`. Keys are checked against the registry.
    `reference` says what quality terms are scored against (the codec ceiling or the raw ground truth);
    `tie_break` orders the trials tied within noise with the best (`qtts_sweep.metrics.paired.TIE_BREAK_RULES`).
    """

    weights: dict[str, float] = field(default_factory=REGISTRY.default_weights)
    spk_sim_cap_to_gt: bool = True
    missing: str = choice("renormalize", ("renormalize", "worst"), "a weighted metric that was not measured")
    constraints: dict[str, float | None] = field(default_factory=REGISTRY.default_limits)
    reference: str = choice(
        "ceiling", ("ceiling", "ground_truth"), "what quality terms are scored against (docs/metrics.md)"
    )
    tie_break: list[str] = field(default_factory=lambda: list(TIE_BREAK_DEFAULT))

    def problems(self, prefix: str | None = "eval.objective") -> list[Problem]:
        found = [("weights", p) for p in REGISTRY.weight_problems(self.weights)]
        found += [("constraints", p) for p in REGISTRY.limit_problems(self.constraints)]
        out = [Problem(f"{prefix}.{section}.{p.key}", p.value, p.rule, p.fix) for section, p in found]
        for i, rule in enumerate(self.tie_break):
            if rule not in TIE_BREAK_RULES:
                near = difflib.get_close_matches(str(rule), list(TIE_BREAK_RULES), n=1)
                hint = f"did you mean `{near[0]}`?" if near else f"use some of {list(TIE_BREAK_RULES)}"
                out.append(Problem(f"{prefix}.tie_break[{i}]", rule, "is not a tie-break rule", hint))
        return out

    def objective_weights(self) -> ObjectiveWeights:
        return ObjectiveWeights(
            self.weights, spk_sim_cap_to_gt=self.spk_sim_cap_to_gt, missing=self.missing, reference=self.reference
        )

    def constraint_limits(self) -> ConstraintLimits:
        return ConstraintLimits(self.constraints)


@dataclass
class EvalConfig(_Validated):
    """Which (checkpoint, scale) to evaluate, on which lines, decoded how."""

    _group = "eval"
    split: str = choice("val", ("val", "test", "train"), "val chooses; test is kept for the promoted pair")
    max_lines: int = 8
    epoch: int = 10
    lora_scale: float = 0.3
    num_seeds: int = 1
    batch_size: int = 4
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def problems(self, prefix: str | None = "eval") -> list[Problem]:
        out: list[Problem] = []
        _check(self.max_lines >= 1, out, f"{prefix}.max_lines", self.max_lines, "must be >= 1", "e.g. 8")
        _check(
            self.epoch >= 1,
            out,
            f"{prefix}.epoch",
            self.epoch,
            "must be >= 1",
            "choose a trained epoch, e.g. eval.epoch=10",
        )
        _check(
            0 <= self.lora_scale <= 2,
            out,
            f"{prefix}.lora_scale",
            self.lora_scale,
            "must be in [0, 2]",
            "e.g. eval.lora_scale=0.3 (0 = base model, 1 = full adapter)",
        )
        _check(self.num_seeds >= 1, out, f"{prefix}.num_seeds", self.num_seeds, "must be >= 1", "e.g. 1")
        _check(self.batch_size >= 1, out, f"{prefix}.batch_size", self.batch_size, "must be >= 1", "e.g. 4")
        out += self.decoding.problems(f"{prefix}.decoding")
        out += self.metrics.problems(f"{prefix}.metrics")
        out += self.objective.problems(f"{prefix}.objective")
        return out


@dataclass
class TrackingConfig(_Validated):
    """Where metrics, audio and models are logged. backend=none runs without any tracking."""

    _group = "tracking"
    backend: str = choice("mlflow", ("mlflow", "none"))
    tracking_uri: str = MISSING
    artifact_location: str = MISSING
    training_experiment: str = "qtts-training"

    def problems(self, prefix: str | None = "tracking") -> list[Problem]:
        out: list[Problem] = []
        if self.backend == "mlflow":
            _check(
                bool(self.tracking_uri),
                out,
                f"{prefix}.tracking_uri",
                self.tracking_uri,
                "must be set for backend=mlflow",
                "e.g. sqlite:///runs/mlflow.db or http://127.0.0.1:5000",
            )
        return out


@dataclass
class PathsConfig(_Validated):
    """Where everything a run writes goes (relative paths resolve against the working directory)."""

    _group = "paths"
    runs_dir: str = "runs"
    data_dir: str = MISSING
    store_dir: str = MISSING
    models_dir: str = MISSING
    production_dir: str = MISSING
    project_dir: str = MISSING  # the qtts-sweep checkout (shipped demo data lives there)


@dataclass
class LauncherConfig(_Validated):
    """Where the drivers of `qtts-sweep sweep --workers N` run: local processes, or a SLURM job array (submitit).

    The SLURM fields map to sbatch options; each job runs one driver (`join_study`) against the shared study.
    """

    _group = "launcher"
    kind: str = choice("local", ("local", "slurm"), "local: N processes here; slurm: a job array of N jobs")
    # submitit's executor for kind=slurm: `slurm` submits with sbatch; `local` runs the same job array as local
    # processes through submitit's LocalExecutor (try a launch on a laptop, and the tests).
    cluster: str = choice("slurm", ("slurm", "local"))
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 240  # the wall-clock limit of each job (sbatch --time), in minutes
    mem: str | None = "32G"
    gres: str | None = "gpu:1"  # one GPU per job (one driver per GPU); null on a CPU-only partition
    cpus: int = 8  # sbatch --cpus-per-task; also the model worker's CPU threads
    setup: list[str] = field(default_factory=list)  # shell lines run before the driver (module load, venv)
    log_folder: str = "runs/slurm/%j"  # submitit's folder per job: its stdout/stderr, pickled call and result
    # SIGTERM this long before the time limit, so the running trial is failed and re-queued before the SIGKILL.
    signal_delay_s: int = 120
    wait: bool = False  # block until every job ends, then print the sweep report (always true for cluster=local)

    def problems(self, prefix: str | None = "launcher") -> list[Problem]:
        out: list[Problem] = []
        _check(self.time_min >= 1, out, f"{prefix}.time_min", self.time_min, "must be >= 1", "e.g. 240")
        _check(self.cpus >= 1, out, f"{prefix}.cpus", self.cpus, "must be >= 1", "e.g. 8")
        _check(
            0 <= self.signal_delay_s < self.time_min * 60,
            out,
            f"{prefix}.signal_delay_s",
            self.signal_delay_s,
            f"must be >= 0 and below the time limit ({self.time_min * 60} s)",
            "lower launcher.signal_delay_s or raise launcher.time_min",
        )
        return out


@dataclass
class StressConfig(_Validated):
    """The production gate of `promote`: the chosen pair speaks `lines` unseen lines with production decoding.

    Each limit refuses the promotion when the measured value (not its interval) is above it; null turns that rule
    off (the value is still measured and recorded). The intervals say how much a value rests on: raise `lines`
    to narrow them.
    """

    lines: int = 200  # how many lines of text_file to speak (the first N); 0 turns the gate off
    text_file: str = "${paths.project_dir}/data/stress/lines.txt"
    chars_per_second: float = 14.0  # expected speaking rate: duration ratio = generated / (chars / this)
    long_chars: int = 120  # lines at least this long are "long": speaker drift is measured on them
    confidence: float = 0.95
    max_no_eos_rate: float | None = 0.01  # upstream Qwen3-TTS: ~0.3-0.5% of generations never stop
    max_duration_ratio_p99: float | None = 3.0
    max_speaker_drift: float | None = 0.35  # 1 - cosine of the first and last third of a long line's voice

    def problems(self, prefix: str | None = "production.stress") -> list[Problem]:
        out: list[Problem] = []
        _check(self.lines >= 0, out, f"{prefix}.lines", self.lines, "must be >= 0 (0: no gate)", "e.g. 200")
        _check(self.chars_per_second > 0, out, f"{prefix}.chars_per_second", self.chars_per_second, "must be > 0",
               "e.g. 14 (read English)")  # fmt: skip
        _check(self.long_chars >= 1, out, f"{prefix}.long_chars", self.long_chars, "must be >= 1", "e.g. 120")
        _check(0 < self.confidence < 1, out, f"{prefix}.confidence", self.confidence, "must be in (0, 1)", "0.95")
        for name in ("max_no_eos_rate", "max_duration_ratio_p99", "max_speaker_drift"):
            value = getattr(self, name)
            _check(value is None or value >= 0, out, f"{prefix}.{name}", value, "must be >= 0 or null", "e.g. null")
        return out


@dataclass
class ProductionConfig(_Validated):
    """What promotion demands of a pair before it becomes the production bundle."""

    _group = "production"
    stress: StressConfig = field(default_factory=StressConfig)

    def problems(self, prefix: str | None = "production") -> list[Problem]:
        return self.stress.problems(f"{prefix}.stress")


@dataclass
class Config(_Validated):
    """The whole resolved config."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    lora: LoraConfig = MISSING
    train: TrainConfig = MISSING
    eval: EvalConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    production: ProductionConfig = field(default_factory=ProductionConfig)
    seed: int = 0

    _group = ""

    def problems(self, prefix: str | None = None) -> list[Problem]:
        return cross_group_problems(self)


def cross_group_problems(cfg: Any) -> list[Problem]:
    """Rules that span groups; `cfg` is a `Config` or the composed DictConfig (attribute access only)."""
    out: list[Problem] = []
    _check(
        cfg.eval.epoch <= cfg.train.max_epochs,
        out,
        "eval.epoch",
        cfg.eval.epoch,
        f"must be <= train.max_epochs ({cfg.train.max_epochs}): no checkpoint exists beyond the horizon",
        "lower eval.epoch or raise train.max_epochs",
    )
    return out


GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
    "paths": PathsConfig,
    "launcher": LauncherConfig,
    "production": ProductionConfig,
}


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (`schema/<group>` and `qtts_schema`).

    User config files can extend them (`defaults: [/schema/train@_here_]`) to get type checking in their IDE and
    at compose time; the shipped files are validated by `qtts_sweep.config.validate` instead, which reports
    every problem at once rather than the first type error OmegaConf meets.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="qtts_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group="schema", name=group, node=schema)


SEARCHABLE_GROUPS = ("model", "data", "lora", "train", "eval")  # what a sweep may vary; paths/tracking are not knobs


def schema_leaf(dotted: str) -> tuple[Any, dataclasses.Field] | None:
    """The type hint and dataclass field of a dotted config leaf (`lora.r`, `eval.decoding.temperature`), or None
    when the key is not a leaf of the schema (unknown, or a whole section such as `eval.decoding`)."""
    parts = dotted.split(".")
    schema: Any = GROUP_SCHEMAS.get(parts[0])
    if schema is None or len(parts) < 2:
        return None
    for i, part in enumerate(parts[1:], start=1):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            return None
        tp = typing.get_type_hints(schema)[part]
        if i == len(parts) - 1:
            return None if dataclasses.is_dataclass(tp) else (tp, fields[part])
        if not dataclasses.is_dataclass(tp):
            return None
        schema = tp
    return None


def leaf_names(group: str) -> list[str]:
    """Every dotted leaf of a group's schema (for did-you-mean hints)."""
    out: list[str] = []

    def walk(schema: Any, prefix: str) -> None:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}.{f.name}")
            else:
                out.append(f"{prefix}.{f.name}")

    if group in GROUP_SCHEMAS:
        walk(GROUP_SCHEMAS[group], group)
    return out
