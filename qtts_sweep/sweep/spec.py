"""Sweep definitions as data (`sweeps/<name>.yaml`): schema, validation, search-space sampling, planning.

Pure logic on plain data: sampling goes through any object with Optuna's `suggest_*` methods (a real trial, or
`optuna.trial.FixedTrial` in tests), and `plan()` needs neither a model nor a database.

Not here: running trials (sweep.py), Optuna storage and MLflow (sweep.py / tracking.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import ConfigError, Problem

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid", "nsgaii")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")
# Parameters a trial may vary, and whether they change the training key (i.e. need their own training).
TRAINING_PARAMS = (
    "train.lr",
    "train.weight_decay",
    "train.subtalker_loss_weight",
    "lora.r",
    "lora.alpha",
    "lora.dropout",
)
EVAL_PARAMS = ("eval.epoch", "eval.lora_scale")


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
    # Feasibility from eval.objective.constraints (metric - limit <= 0) passed to TPE / NSGA-II as constraints.
    constrained: bool = False
    max_failure_rate: float = 0.5
    min_trials_for_failure_cap: int = 4
    top_k: int = 3
    source: str = ""

    @property
    def multi(self) -> bool:
        return self.objective == "multi"


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


def load_spec(name_or_path: str, max_epochs: int | None = None) -> SweepSpec:
    """Load and validate a sweep file (a name in sweeps/ or a path); every problem is reported at once."""
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
    space: dict[str, ParamSpec] = {}
    for pname, pdef in (raw.get("space") or {}).items():
        if pname not in TRAINING_PARAMS + EVAL_PARAMS:
            problems.append(
                Problem(
                    f"{where}: space.{pname}",
                    pdef,
                    "cannot be searched",
                    f"search some of {list(TRAINING_PARAMS + EVAL_PARAMS)}",
                )
            )
            continue
        try:
            space[pname] = ParamSpec(**pdef)
        except TypeError as exc:
            problems.append(Problem(f"{where}: space.{pname}", pdef, str(exc), "use type/low/high/log/step/choices"))
            continue
        problems += _param_problems(pname, space[pname], where)
    fields = {k: v for k, v in raw.items() if k in known}
    spec = SweepSpec(
        name=path.stem, study_name=fields.pop("study_name", path.stem), space=space, source=str(path), **fields
    )
    problems += _spec_problems(spec, where, max_epochs)
    if problems:
        raise ConfigError(problems, f"sweep `{path.stem}`")
    return spec


def _spec_problems(spec: SweepSpec, where: str, max_epochs: int | None) -> list[Problem]:
    out: list[Problem] = []
    if spec.sampler not in SAMPLERS:
        out.append(Problem(f"{where}: sampler", spec.sampler, f"must be one of {list(SAMPLERS)}", "e.g. tpe"))
    if spec.pruner not in PRUNERS:
        out.append(Problem(f"{where}: pruner", spec.pruner, f"must be one of {list(PRUNERS)}", "e.g. median"))
    if spec.n_trials < 1:
        out.append(Problem(f"{where}: n_trials", spec.n_trials, "must be >= 1", "e.g. n_trials: 24"))
    if spec.objective not in ("composite", "multi"):
        out.append(Problem(f"{where}: objective", spec.objective, "must be composite or multi", "composite"))
    if spec.multi:
        from qtts_sweep.metrics.objective import DIRECTIONS

        for i, name in enumerate(spec.objectives):
            if name not in DIRECTIONS:
                out.append(
                    Problem(
                        f"{where}: objectives[{i}]",
                        name,
                        "is not a metric with a direction",
                        f"use one of {sorted(DIRECTIONS)}",
                    )
                )
            elif i < len(spec.directions) and spec.directions[i] != DIRECTIONS[name]:
                out.append(
                    Problem(
                        f"{where}: directions[{i}]",
                        spec.directions[i],
                        f"{name} is to {DIRECTIONS[name]}",
                        f"set directions[{i}] to {DIRECTIONS[name]}",
                    )
                )
    if spec.constrained and spec.sampler not in ("tpe", "nsgaii"):
        out.append(
            Problem(
                f"{where}: constrained",
                True,
                "only the tpe and nsgaii samplers take constraints",
                "use sampler: tpe or nsgaii",
            )
        )
    if spec.multi and len(spec.objectives) != len(spec.directions):
        out.append(
            Problem(
                f"{where}: directions",
                spec.directions,
                "needs one direction per objective",
                f"objectives: {spec.objectives}",
            )
        )
    if not spec.multi and spec.directions != ["maximize"]:
        out.append(
            Problem(
                f"{where}: directions", spec.directions, "the composite score is maximized", "directions: [maximize]"
            )
        )
    if spec.multi and spec.pruner != "none":
        out.append(
            Problem(
                f"{where}: pruner",
                spec.pruner,
                "Optuna cannot prune multi-objective studies (report/should_prune raise)",
                "set pruner: none",
            )
        )
    if spec.sampler == "grid":
        for name, p in spec.space.items():
            if p.values() is None:
                out.append(
                    Problem(
                        f"{where}: space.{name}",
                        p,
                        "the grid sampler needs a finite set",
                        "give choices, an int range or a float step",
                    )
                )
    if not 0 < spec.max_failure_rate <= 1:
        out.append(Problem(f"{where}: max_failure_rate", spec.max_failure_rate, "must be in (0, 1]", "e.g. 0.5"))
    ep = spec.space.get("eval.epoch")
    if ep is not None and max_epochs is not None:
        top = max(ep.values() or [ep.high])
        if top > max_epochs:
            out.append(
                Problem(
                    f"{where}: space.eval.epoch",
                    top,
                    f"exceeds train.max_epochs={max_epochs}: those checkpoints cannot exist",
                    f"lower the range to <= {max_epochs} or raise train.max_epochs",
                )
            )
    for i, point in enumerate(spec.enqueue):
        missing = sorted(set(spec.space) - set(point))
        extra = sorted(set(point) - set(spec.space))
        if missing or extra:
            out.append(
                Problem(
                    f"{where}: enqueue[{i}]",
                    point,
                    "must give exactly the searched parameters",
                    f"missing {missing}, not searched {extra}",
                )
            )
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


def grid_space(spec: SweepSpec) -> dict[str, list[Any]]:
    return {name: p.values() for name, p in spec.space.items()}


@dataclass
class Plan:
    training_points: int | None  # distinct training configurations (None: unbounded, continuous lr)
    max_epoch: int
    epochs_to_train: int | None  # worst case, each training configuration trained to max_epoch
    bytes_per_checkpoint: int
    total_bytes: int | None
    grid_size: int | None


def plan(spec: SweepSpec, lora_params: int, fixed_epoch: int) -> Plan:
    """What the space can cost before anything runs: training keys, epochs, checkpoint disk.

    `fixed_epoch` is the config's eval.epoch, used when the sweep does not search the epoch.
    """
    train_vals = [spec.space[n].values() for n in spec.space if n in TRAINING_PARAMS]
    bounded = all(v is not None for v in train_vals)
    points = math.prod(len(v) for v in train_vals) if bounded else None
    if points is not None:
        points = min(points, spec.n_trials)
    else:
        points = None
    ep = spec.space.get("eval.epoch")
    max_epoch = int(max(ep.values() or [ep.high])) if ep else fixed_epoch
    # adapter weights + AdamW's two moments, fp32
    per_ckpt = lora_params * 4 * 3
    keys = points if points is not None else spec.n_trials
    grid = None
    all_vals = [p.values() for p in spec.space.values()]
    if all(v is not None for v in all_vals):
        grid = math.prod(len(v) for v in all_vals)
    return Plan(points, max_epoch, keys * max_epoch, per_ckpt, keys * max_epoch * per_ckpt, grid)


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


def format_plan(spec: SweepSpec, p: Plan) -> str:
    def size(b: int | None) -> str:
        return "unbounded" if b is None else f"{b / 2**20:.1f} MiB"

    rows = [
        f"sweep `{spec.name}` (study `{spec.study_name}`): {spec.n_trials} trials, sampler {spec.sampler}, "
        f"pruner {spec.pruner}, objective {spec.objective}",
        "  searched: " + ", ".join(f"{k} ({_describe(v)})" for k, v in spec.space.items()),
        f"  distinct training keys: {p.training_points if p.training_points is not None else 'one per trial'}"
        + ("" if p.training_points is not None else " (continuous lr: use a log grid so trials share training)"),
        f"  epochs to train at most: {p.epochs_to_train} (each key up to epoch {p.max_epoch}; reused across trials)",
        f"  disk: {size(p.bytes_per_checkpoint)} per checkpoint, at most {size(p.total_bytes)}",
    ]
    if p.grid_size is not None:
        rows.append(f"  grid size: {p.grid_size} points")
    if spec.enqueue:
        rows.append(f"  enqueued baseline trials: {spec.enqueue}")
    return "\n".join(rows)


def _describe(p: ParamSpec) -> str:
    if p.type == "categorical":
        return f"one of {p.choices}"
    extra = ", log" if p.log else (f", step {p.step}" if p.step else "")
    return f"{p.type} {p.low}..{p.high}{extra}"


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    names = list(spec.space)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid_space(spec)[n] for n in names))]


def apply_params(cfg: Any, params: dict[str, Any]) -> Any:
    """The trial's config: `cfg` with the sampled leaves replaced, every rule re-checked (all problems at once).

    Equivalent to composing the base overrides plus `overrides_for(params)` with Hydra, since searched params are
    plain leaves of the schema (`TRAINING_PARAMS`, `EVAL_PARAMS`), but costs microseconds instead of a composition
    per trial.
    """
    import dataclasses

    from qtts_sweep.config.schema import cross_group_problems

    by_group: dict[str, dict[str, Any]] = {}
    for dotted, value in params.items():
        group, leaf = dotted.split(".", 1)
        by_group.setdefault(group, {})[leaf] = value
    problems: list[Problem] = []
    changed = {}
    for group, leaves in by_group.items():
        try:
            changed[group] = dataclasses.replace(getattr(cfg, group), **leaves)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems, "trial config")
    out = dataclasses.replace(cfg, **changed)
    problems = cross_group_problems(out)
    if problems:
        raise ConfigError(problems, "trial config")
    return out
