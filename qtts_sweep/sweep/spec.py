"""Sweep definitions as data (`sweeps/<name>.yaml`): schema, validation, search-space sampling, planning.

Pure logic on plain data: sampling goes through any object with Optuna's `suggest_*` methods (a real trial, or
`optuna.trial.FixedTrial` in tests), and `plan()` needs neither a model nor a database.

A sweep may search any leaf of the model / data / lora / train / eval config groups. A searched leaf that is part
of the training key (`qtts_sweep.train.store.KEY_GROUPS` minus `KEY_EXCLUDED`) needs its own training; any other
(`eval.epoch`, `eval.lora_scale`, decoding) reuses checkpoints.

Not here: running trials (driver.py), Optuna storage (storage.py), MLflow (qtts_sweep.tracking).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import SEARCHABLE_GROUPS, Config, ConfigError, leaf_names, schema_leaf, type_ok
from qtts_sweep.sweep.fidelity import Fidelity, read_fidelity, spec_problems
from qtts_sweep.train.store import KEY_EXCLUDED, KEY_GROUPS
from qtts_sweep.util.problems import Problem

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid", "nsgaii")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon")
EPOCH = "eval.epoch"  # the checkpoint a trial scores: planning and the plot treat it specially


@dataclass
class ParamSpec:
    """One searched parameter: float (optionally log or stepped), int range, or a categorical list."""

    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def values(self) -> list[Any] | None:
        """Every value the parameter can take, when that set is finite (grid/plan); None for continuous."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step:
            n = int(round((self.high - self.low) / self.step))
            return [round(self.low + i * self.step, 10) for i in range(n + 1)]
        return None


@dataclass
class SweepSpec:
    """A sweep: what varies, how it is sampled and pruned, the budget, the objective and where it is stored."""

    name: str
    study_name: str
    space: dict[str, ParamSpec]
    base: list[str] = field(default_factory=list)  # Hydra overrides applied to every trial
    sampler: str = "tpe"
    sampler_seed: int = 0
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 20
    objective: str = "composite"  # "composite" (single, maximize) or "multi"
    objectives: list[str] = field(default_factory=list)  # metric names for objective=multi
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    storage: str | None = None  # Optuna RDB URL; None = sqlite:///<runs>/optuna.db
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    # Multi-fidelity over held-out lines (with pruner: wilcoxon): first min_lines, then step more (fidelity.py).
    fidelity: Fidelity | None = None
    # Earlier studies (names in the default storages, or `<storage URL>#<study name>`) whose top points are
    # enqueued once, after `enqueue` (warm_start.py).
    warm_start: list[str] = field(default_factory=list)
    warm_start_top_k: int = 3
    # Feasibility from eval.objective.constraints (metric - limit <= 0) passed to TPE / NSGA-II as constraints.
    constrained: bool = False
    max_failure_rate: float = 0.5
    min_trials_for_failure_cap: int = 4
    top_k: int = 3
    source: str = ""

    @property
    def multi(self) -> bool:
        return self.objective == "multi"


def is_training_param(name: str) -> bool:
    """Whether changing this leaf changes the training key (a new training run) rather than reusing checkpoints."""
    return name.split(".", 1)[0] in KEY_GROUPS and name not in KEY_EXCLUDED


def _param_problems(name: str, p: ParamSpec, where: str) -> list[Problem]:
    out: list[Problem] = []
    key = f"{where}: space.{name}"
    if p.type not in PARAM_TYPES:
        return [Problem(key, p.type, f"type must be one of {list(PARAM_TYPES)}", "e.g. type: float")]
    if p.type == "categorical":
        if not p.choices:
            out.append(
                Problem(
                    key, p.choices, "categorical needs a non-empty `choices` list", "e.g. choices: [2.0e-5, 2.0e-6]"
                )
            )
        return out
    if p.low is None or p.high is None or not p.low <= p.high:
        return [Problem(key, [p.low, p.high], "needs low <= high", "e.g. low: 0.2, high: 1.0")]
    if p.log and p.step:
        out.append(
            Problem(
                key,
                {"log": p.log, "step": p.step},
                "Optuna cannot combine log=True with a step",
                "use a categorical log grid (choices: [...]) or drop the step",
            )
        )
    if p.log and p.low <= 0:
        out.append(Problem(key, p.low, "log scale needs low > 0", "e.g. low: 1.0e-7"))
    if p.type == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        out.append(Problem(key, [p.low, p.high], "int bounds must be integers", "e.g. low: 1, high: 10"))
    return out


def _leaf_problem(name: str, pdef: Any, where: str) -> Problem | None:
    """None when `name` is a searchable config leaf; else what is wrong, with a did-you-mean."""
    group = name.split(".", 1)[0]
    if group not in SEARCHABLE_GROUPS:
        return Problem(
            f"{where}: space.{name}", pdef, f"only leaves of {list(SEARCHABLE_GROUPS)} can be searched", "e.g. lora.r"
        )
    if schema_leaf(name) is None:
        near = difflib.get_close_matches(name, leaf_names(group), n=1)
        fix = f"did you mean `{near[0]}`?" if near else f"see `qtts-sweep check` for the leaves of `{group}`"
        return Problem(f"{where}: space.{name}", pdef, "is not a config leaf", fix)
    return None


def _read_space(raw: dict, where: str) -> tuple[dict[str, ParamSpec], list[Problem]]:
    space: dict[str, ParamSpec] = {}
    problems: list[Problem] = []
    for pname, pdef in (raw.get("space") or {}).items():
        bad = _leaf_problem(pname, pdef, where)
        if bad:
            problems.append(bad)
            continue
        try:
            space[pname] = ParamSpec(**pdef)
        except TypeError as exc:
            problems.append(Problem(f"{where}: space.{pname}", pdef, str(exc), "use type/low/high/log/step/choices"))
            continue
        problems += _param_problems(pname, space[pname], where)
        problems += _type_problems(pname, space[pname], where)
    return space, problems


def _type_problems(name: str, p: ParamSpec, where: str) -> list[Problem]:
    """Every value the parameter can take must fit the leaf's schema type (an int leaf takes no 0.5)."""
    tp, _ = schema_leaf(name)
    values = p.choices if p.type == "categorical" else [p.low, p.high]
    if p.type == "float" and not type_ok(0.5, tp):
        return [Problem(f"{where}: space.{name}", p.type, "the config leaf is not a float", "use type: int or choices")]
    bad = [v for v in values or [] if v is not None and not type_ok(v, tp)]
    if bad:
        return [Problem(f"{where}: space.{name}", bad, f"do not fit the leaf's type {tp}", "give values of that type")]
    return []


def load_spec(name_or_path: str, cfg: Config | None = None) -> SweepSpec:
    """Load and validate a sweep file (a name in sweeps/ or a path); every problem is reported at once.

    With `cfg` (the config the trials start from), every value the space can take is also applied to it and
    checked against the config's rules (e.g. `lora.r: {choices: [0, 8]}` fails on 0 here, not in trial 5).
    """
    from omegaconf import OmegaConf

    path = Path(name_or_path)
    if not path.suffix:
        path = SWEEPS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ConfigError(
            [Problem("sweep", name_or_path, "no such sweep file", f"use one of {options} or a path to a YAML file")],
            "sweep",
        )
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    where = str(path)
    problems: list[Problem] = []
    known = set(SweepSpec.__dataclass_fields__) - {"space", "source", "name"}
    unknown = sorted(set(raw) - known - {"space"})
    if unknown:
        problems.append(Problem(where, unknown, "unknown key(s)", f"allowed: {sorted(known | {'space'})}"))
    space, found = _read_space(raw, where)
    problems += found
    fields = {k: v for k, v in raw.items() if k in known}
    fields["fidelity"], found = read_fidelity(fields.get("fidelity"), where)
    problems += found
    spec = SweepSpec(
        name=path.stem, study_name=fields.pop("study_name", path.stem), space=space, source=str(path), **fields
    )
    problems += _spec_problems(spec, where)
    if problems:
        raise ConfigError(problems, f"sweep `{path.stem}`")
    return spec if cfg is None else check_against(spec, cfg)


def check_against(spec: SweepSpec, cfg: Config) -> SweepSpec:
    """Every value the space can take applied to `cfg` (the config the trials start from) and checked against the
    config's rules (e.g. `lora.r: {choices: [0, 8]}` fails on 0 here, not in trial 5); returns `spec`. The launcher
    reads the sweep file once, composes with its `base`, then checks here."""
    problems = _value_problems(spec, cfg, spec.source)
    if problems:
        raise ConfigError(problems, f"sweep `{spec.name}`")
    return spec


def _spec_problems(spec: SweepSpec, where: str) -> list[Problem]:
    out: list[Problem] = []
    if spec.sampler not in SAMPLERS:
        out.append(Problem(f"{where}: sampler", spec.sampler, f"must be one of {list(SAMPLERS)}", "e.g. tpe"))
    if spec.pruner not in PRUNERS:
        out.append(Problem(f"{where}: pruner", spec.pruner, f"must be one of {list(PRUNERS)}", "e.g. median"))
    out += spec_problems(spec.pruner, spec.fidelity, where)
    if not isinstance(spec.warm_start, list) or not all(isinstance(w, str) and w for w in spec.warm_start):
        fix = "e.g. warm_start: [voice_a] or ['sqlite:///runs/optuna.db#voice_a']"
        out.append(Problem(f"{where}: warm_start", spec.warm_start, "must be a list of study names or URLs", fix))
    if spec.warm_start_top_k < 1:
        out.append(Problem(f"{where}: warm_start_top_k", spec.warm_start_top_k, "must be >= 1", "e.g. 3"))
    if spec.n_trials < 1:
        out.append(Problem(f"{where}: n_trials", spec.n_trials, "must be >= 1", "e.g. n_trials: 24"))
    if not 0 < spec.max_failure_rate <= 1:
        out.append(Problem(f"{where}: max_failure_rate", spec.max_failure_rate, "must be in (0, 1]", "e.g. 0.5"))
    if spec.constrained and spec.sampler not in ("tpe", "nsgaii"):
        rule = "only the tpe and nsgaii samplers take constraints"
        out.append(Problem(f"{where}: constrained", True, rule, "use sampler: tpe or nsgaii"))
    if spec.sampler == "grid":
        for name, p in spec.space.items():
            if p.values() is None:
                fix = "give choices, an int range or a float step"
                out.append(Problem(f"{where}: space.{name}", p, "the grid sampler needs a finite set", fix))
    return out + _objective_problems(spec, where) + _enqueue_problems(spec, where)


def _objective_problems(spec: SweepSpec, where: str) -> list[Problem]:
    from qtts_sweep.metrics.objective import DIRECTIONS

    out: list[Problem] = []
    if spec.objective not in ("composite", "multi"):
        out.append(Problem(f"{where}: objective", spec.objective, "must be composite or multi", "composite"))
    if not spec.multi:
        if spec.directions != ["maximize"]:
            rule = "the composite score is maximized"
            out.append(Problem(f"{where}: directions", spec.directions, rule, "directions: [maximize]"))
        return out
    for i, name in enumerate(spec.objectives):
        if name not in DIRECTIONS:
            rule = "is not a metric with a direction"
            out.append(Problem(f"{where}: objectives[{i}]", name, rule, f"use one of {sorted(DIRECTIONS)}"))
        elif i < len(spec.directions) and spec.directions[i] != DIRECTIONS[name]:
            rule, fix = f"{name} is to {DIRECTIONS[name]}", f"set directions[{i}] to {DIRECTIONS[name]}"
            out.append(Problem(f"{where}: directions[{i}]", spec.directions[i], rule, fix))
    if len(spec.objectives) != len(spec.directions):
        rule = "needs one direction per objective"
        out.append(Problem(f"{where}: directions", spec.directions, rule, f"objectives: {spec.objectives}"))
    if spec.pruner != "none":
        rule = "Optuna cannot prune multi-objective studies (report/should_prune raise)"
        out.append(Problem(f"{where}: pruner", spec.pruner, rule, "set pruner: none"))
    return out


def _enqueue_problems(spec: SweepSpec, where: str) -> list[Problem]:
    out: list[Problem] = []
    for i, point in enumerate(spec.enqueue):
        missing = sorted(set(spec.space) - set(point))
        extra = sorted(set(point) - set(spec.space))
        if missing or extra:
            rule = "must give exactly the searched parameters"
            out.append(Problem(f"{where}: enqueue[{i}]", point, rule, f"missing {missing}, not searched {extra}"))
    return out


def _value_problems(spec: SweepSpec, cfg: Config, where: str) -> list[Problem]:
    """Each value a parameter can take (its choices, grid, or bounds), applied alone to `cfg`, and each enqueued
    point, must give a valid config."""
    out: list[Problem] = []
    for name, p in spec.space.items():
        values = p.values() or [p.low, p.high]
        for value in values:
            try:
                apply_params(cfg, {name: value})
            except ConfigError as exc:
                out += [dataclasses.replace(q, key=f"{where}: space.{name} -> {q.key}") for q in exc.problems]
    for i, point in enumerate(spec.enqueue):
        try:
            apply_params(cfg, point)
        except ConfigError as exc:
            out += [dataclasses.replace(q, key=f"{where}: enqueue[{i}] -> {q.key}") for q in exc.problems]
    return out


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """Draw one point of the space through Optuna's suggest API (works with FixedTrial)."""
    out: dict[str, Any] = {}
    for name, p in spec.space.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1))
        else:
            v = trial.suggest_float(
                name, float(p.low), float(p.high), log=p.log, step=float(p.step) if p.step else None
            )
            out[name] = round(v, 10) if p.step else v  # 0.6000000000000001 -> 0.6: one point, one eval cache key
    return out


def overrides_for(params: dict[str, Any]) -> list[str]:
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sorted(params.items())]


def _replace_leaf(obj: Any, parts: list[str], value: Any) -> Any:
    """`obj` (a dataclass, or a dict section such as eval.objective.weights) with one nested leaf replaced."""
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        return {**obj, head: _replace_leaf(obj[head], rest, value) if rest else value}
    new = _replace_leaf(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """The trial's config: `cfg` with the sampled leaves replaced, every rule re-checked (all problems at once).

    Equivalent to composing the base overrides plus `overrides_for(params)` with Hydra (searched params are plain
    leaves of the schema), but costs microseconds instead of a composition per trial. Each replaced section is
    rebuilt through its dataclass, so its own rules run; then the cross-group rules.
    """
    from qtts_sweep.config.schema import cross_group_problems

    problems: list[Problem] = []
    out = cfg
    for dotted, value in params.items():
        try:
            out = _replace_leaf(out, dotted.split("."), value)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems, "trial config")
    problems = cross_group_problems(out)
    if problems:
        raise ConfigError(problems, "trial config")
    return out


@dataclass
class Plan:
    training_points: int | None  # distinct training configurations (None: unbounded, a continuous training leaf)
    max_epoch: int
    epochs_to_train: int | None  # worst case, each training configuration trained to max_epoch
    bytes_per_checkpoint: dict[int, int]  # LoRA rank -> adapter + AdamW moments, fp32
    total_bytes: int | None
    grid_size: int | None


def plan(spec: SweepSpec, cfg: Config, lora_params: Any) -> Plan:
    """What the space can cost before anything runs: training keys, epochs, checkpoint disk.

    Args:
        cfg: the config trials start from (its eval.epoch and lora.r apply when they are not searched).
        lora_params: `lora_params(r) -> int`, LoRA parameters of one adapter at rank r.
    """
    train_vals = [p.values() for n, p in spec.space.items() if is_training_param(n)]
    bounded = all(v is not None for v in train_vals)
    points = min(math.prod(len(v) for v in train_vals), spec.n_trials) if bounded else None
    ep = spec.space.get(EPOCH)
    max_epoch = int(max(ep.values() or [ep.high])) if ep else cfg.eval.epoch
    ranks = spec.space["lora.r"].values() if "lora.r" in spec.space else None
    per_ckpt = {int(r): lora_params(int(r)) * 4 * 3 for r in (ranks or [cfg.lora.r])}
    keys = points if points is not None else spec.n_trials
    # Worst case: every training key at the largest rank.
    total = keys * max_epoch * max(per_ckpt.values())
    all_vals = [p.values() for p in spec.space.values()]
    grid = math.prod(len(v) for v in all_vals) if all(v is not None for v in all_vals) else None
    return Plan(points, max_epoch, keys * max_epoch, per_ckpt, total, grid)


def lora_param_count(model_config: dict, r: int, targets: list[str], scope: str) -> int:
    """LoRA parameters r*(in+out) per adapted projection, from a Qwen3-TTS config.json dict."""

    def per_layer(c: dict) -> int:
        h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        hd = c.get("head_dim") or h // heads
        inter = c["intermediate_size"]
        dims = {
            "q_proj": (h, heads * hd),
            "k_proj": (h, kv * hd),
            "v_proj": (h, kv * hd),
            "o_proj": (heads * hd, h),
            "gate_proj": (h, inter),
            "up_proj": (h, inter),
            "down_proj": (inter, h),
        }
        return sum(r * (a + b) for name, (a, b) in dims.items() if name in targets)

    talker = model_config["talker_config"]
    total = per_layer(talker) * talker["num_hidden_layers"]
    if scope == "talker_and_code_predictor":
        cp = talker["code_predictor_config"]
        total += per_layer(cp) * cp["num_hidden_layers"]
    return total


def _size(b: int | None) -> str:
    return "unbounded" if b is None else f"{b / 2**20:.1f} MiB"


def format_plan(spec: SweepSpec, p: Plan) -> str:
    trained = [n for n in spec.space if is_training_param(n)]
    keys = p.training_points if p.training_points is not None else "one per trial"
    hint = "" if p.training_points is not None else " (a continuous training leaf: use a grid so trials share training)"
    per_rank = ", ".join(f"r={r}: {_size(b)}" for r, b in sorted(p.bytes_per_checkpoint.items()))
    rows = [
        f"sweep `{spec.name}` (study `{spec.study_name}`): {spec.n_trials} trials, sampler {spec.sampler}, "
        f"pruner {spec.pruner}, objective {spec.objective}",
        *(
            [f"  lines: first {spec.fidelity.min_lines}, then {spec.fidelity.step} more while a trial can still win"]
            if spec.fidelity
            else []
        ),
        "  searched: " + ", ".join(f"{k} ({_describe(v)})" for k, v in spec.space.items()),
        f"  training leaves (each value trains anew): {', '.join(trained) or 'none'}",
        f"  distinct training keys: {keys}{hint}",
        f"  epochs to train at most: {p.epochs_to_train} (each key up to epoch {p.max_epoch}; reused across trials)",
        f"  disk per checkpoint (adapter + optimizer state): {per_rank}; at most {_size(p.total_bytes)} in all",
    ]
    if p.grid_size is not None:
        rows.append(f"  grid size: {p.grid_size} points")
    if spec.enqueue:
        rows.append(f"  enqueued baseline trials: {spec.enqueue}")
    if spec.warm_start:
        rows.append(f"  warm start: top {spec.warm_start_top_k} of {spec.warm_start}")
    return "\n".join(rows)


def _describe(p: ParamSpec) -> str:
    if p.type == "categorical":
        return f"one of {p.choices}"
    extra = ", log" if p.log else (f", step {p.step}" if p.step else "")
    return f"{p.type} {p.low}..{p.high}{extra}"
