"""Composes the Hydra config tree and validates it against the schemas, reporting every problem at once.

`load_config(overrides)` is what every subcommand calls first: compose `conf/` (plus any `--config-dir`),
check every key's type and every rule (`qtts_sweep.config.schema`) in one pass, check that `model.source` can
be loaded from disk (`qtts_sweep.config.model_source`), resolve paths, and return a typed `Config`. Nothing
heavy is imported here: a bad config fails in well under a second, before any model is loaded.

Not here: whether a value fits its field and the rules themselves (schema.py: `value_problems`, each schema's
`problems()`; the same checks run when a schema object is constructed in code), and the sweep's Hydra app
(qtts_sweep.sweep.hydra_app). Here: what only a YAML tree can get wrong (unknown keys, missing values,
unresolvable interpolations, a missing group) and checking rules around badly typed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qtts_sweep.config.model_source import model_source_problems
from qtts_sweep.config.schema import (
    GROUP_SCHEMAS,
    Config,
    ConfigError,
    cross_group_problems,
    register_configs,
    value_problems,
)
from qtts_sweep.util.problems import Problem

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_DIR / "conf"
PRIMARY = "config"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("qtts.project_dir"):
        OmegaConf.register_new_resolver("qtts.project_dir", lambda: str(PROJECT_DIR))


def _unknown_override_key(exc: Exception) -> str | None:
    """The dotted key of an override Hydra refused because it is not in the config, if that is the error."""
    msg = str(exc)
    marker = "Could not override '"
    if marker in msg:
        return msg.split(marker, 1)[1].split("'", 1)[0]
    return None


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: str | os.PathLike | None = None) -> DictConfig:
    """Compose `conf/` with Hydra's Compose API; unknown override keys are all reported together.

    Args:
        overrides: Hydra overrides (`train.lr=1e-4`, `model=tiny`, `+experiment=tiny_demo`).
        config_dir: an extra config folder searched before the shipped `conf/` (the user's own data/experiment
            configs), like Hydra's `--config-dir`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    register_configs()
    overrides = list(overrides)
    if config_dir is not None:
        extra = Path(config_dir).resolve()
        if not extra.is_dir():
            raise ConfigError(
                [
                    Problem(
                        "--config-dir",
                        str(config_dir),
                        "is not a folder",
                        "pass a folder that holds config groups (e.g. data/, experiment/)",
                    )
                ]
            )
        overrides.append(f"hydra.searchpath=[file://{extra}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose_with(lambda ov: hydra_compose(config_name=PRIMARY, overrides=ov), overrides)
    finally:
        GlobalHydra.instance().clear()


def compose_with(compose_once: Callable[[list[str]], DictConfig], overrides: list[str]) -> DictConfig:
    """Run a Hydra composition, turning its one-at-a-time override errors into one list of problems.

    Overrides of schema fields that a group's YAML leaves at their default are added (`+key=value`) instead of
    refused. Used by `compose()` (Compose API) and by the sweeper (inside a running Hydra app).
    """
    from hydra.errors import ConfigCompositionException, MissingConfigException

    overrides = list(overrides)
    problems: list[Problem] = []
    while True:
        try:
            cfg = compose_once(overrides)
            break
        except MissingConfigException as exc:
            options = getattr(exc, "options", None) or []
            raise ConfigError(
                [
                    Problem(
                        "overrides",
                        overrides,
                        str(exc).splitlines()[0],
                        f"choose one of {options}, or add the file in --config-dir",
                    )
                ]
            ) from exc
        except ConfigCompositionException as exc:
            key = _unknown_override_key(exc)
            if key is None:
                raise ConfigError(
                    [
                        Problem(
                            "overrides",
                            overrides,
                            str(exc).splitlines()[0],
                            "check the override syntax: key=value, group=option",
                        )
                    ]
                ) from exc
            bad = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key]
            if bad and not bad[0].startswith(("+", "~")) and _is_schema_field(key):
                # A schema field the group's YAML leaves at its default: add it instead.
                overrides = [f"+{o}" if o == bad[0] else o for o in overrides]
                continue
            value = bad[0].split("=", 1)[-1] if bad else None
            problems.append(_unknown_key_problem(key, value, _known_fields(key)))
            overrides = [o for o in overrides if o not in bad]
            if not bad:
                raise ConfigError(problems) from exc
    if problems:
        raise ConfigError(problems)
    return cfg


def _known_fields(key: str) -> list[str]:
    """Field names of the schema section that `key` (dotted) would live in, for did-you-mean hints."""
    parts = key.split(".")
    schema: Any = GROUP_SCHEMAS.get(parts[0])
    for part in parts[1:-1]:
        if schema is None or not dataclasses.is_dataclass(schema):
            return []
        schema = typing.get_type_hints(schema).get(part)
    if schema is None or not dataclasses.is_dataclass(schema):
        return sorted(GROUP_SCHEMAS) if len(parts) == 1 else []
    return [f.name for f in dataclasses.fields(schema)]


def _is_schema_field(key: str) -> bool:
    """A field of a schema section, or an entry of a mapping field (its keys are checked by the schema's rules)."""
    if key.rsplit(".", 1)[-1] in _known_fields(key):
        return True
    parts = key.split(".")
    section: Any = GROUP_SCHEMAS.get(parts[0])
    for part in parts[1:-1]:
        if section is None or not dataclasses.is_dataclass(section):
            return False
        section = typing.get_type_hints(section).get(part)
    return typing.get_origin(section) is dict


def _unknown_key_problem(key: str, value: Any, known: list[str] | None) -> Problem:
    leaf = key.rsplit(".", 1)[-1]
    near = difflib.get_close_matches(leaf, known or [], n=1)
    fix = f"did you mean `{key.rsplit('.', 1)[0]}.{near[0]}`?" if near else "remove it or fix its spelling"
    return Problem(key, value, "is not a known config key", fix)


def check_node(node: Any, schema: type, prefix: str) -> list[Problem]:
    """Every type, choice, missing-value and unknown-key problem of `node` against dataclass `schema`."""
    problems: list[Problem] = []
    if not isinstance(node, DictConfig):
        return [Problem(prefix, node, f"must be a mapping of {schema.__name__} fields", "fix the YAML structure")]
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in fields:
            problems.append(_unknown_key_problem(f"{prefix}.{key}", node._get_node(key)._value(), list(fields)))
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        tp = hints[name]
        if name not in node or OmegaConf.is_missing(node, name):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING or (f.default == "???"):
                problems.append(Problem(key, "???", "is required and has no value", f"set it, e.g. {key}=..."))
            continue
        try:
            value = node[name]
        except Exception as exc:  # interpolation errors
            problems.append(
                Problem(
                    key,
                    node._get_node(name)._value(),
                    f"cannot be resolved ({exc})",
                    "fix the ${...} interpolation",
                )
            )
            continue
        if dataclasses.is_dataclass(tp):
            problems += check_node(value, tp, key)
            continue
        problems += value_problems(key, value, f, tp)
    return problems


def validate(cfg: DictConfig, check_model: bool = True) -> Config:
    """Check types and rules of a composed config; return the typed `Config` or raise every problem at once.

    Type problems do not hide rule problems: a field with a wrong type is checked at its schema default, so
    `train.lr=abc eval.lora_scale=-1` reports both. `check_model` also checks that `model.source` can be loaded
    from disk (qtts_sweep.config.model_source); composition-only callers that never load a model turn it off.
    """
    problems: list[Problem] = []
    known_groups = set(GROUP_SCHEMAS) | {"seed"}
    for key in cfg.keys():
        if key not in known_groups:
            problems.append(_unknown_key_problem(str(key), "...", sorted(known_groups)))
    typed_ok = True
    for group, schema in GROUP_SCHEMAS.items():
        if group not in cfg:
            problems.append(
                Problem(
                    group,
                    None,
                    "config group is missing",
                    f"add `- {group}: <option>` to the defaults list of conf/config.yaml",
                )
            )
            typed_ok = False
            continue
        found = check_node(cfg[group], schema, group)
        typed_ok &= not found
        problems += found + _rule_problems(cfg[group], schema, group, {p.key for p in found})
        if group == "model" and check_model and not found:
            problems += model_source_problems(cfg[group])
    problems += _cross_group_problems(cfg)
    if problems or not typed_ok:
        raise ConfigError(problems)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))


def _rule_problems(node: DictConfig, schema: type, prefix: str, bad: set[str]) -> list[Problem]:
    """The schema's rule problems for one group, with badly typed fields checked at their defaults instead."""
    try:
        data = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an unresolvable interpolation: already a type problem
        return []
    if not isinstance(data, dict) or not _defaults_for_bad(data, schema, prefix, bad):
        return []
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except ConfigError as exc:
        return [p for p in exc.problems if p.key not in bad]
    return []


def _defaults_for_bad(data: dict, schema: type, prefix: str, bad: set[str]) -> bool:
    """Put schema defaults in place of the `bad` keys (unknown keys dropped), in place; False if one has none."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for name in list(data):
        key = f"{prefix}.{name}"
        f = fields.get(name)
        if f is None:
            del data[name]
        elif key in bad:
            if f.default_factory is not dataclasses.MISSING:
                del data[name]  # the structured schema fills it in
            elif f.default is dataclasses.MISSING or f.default == "???":
                return False
            else:
                data[name] = f.default
        elif dataclasses.is_dataclass(hints[name]) and isinstance(data[name], dict):
            if not _defaults_for_bad(data[name], hints[name], key, bad):
                return False
    return True


def _cross_group_problems(cfg: DictConfig) -> list[Problem]:
    """Cross-group rules on the values as given; a rule that reads a badly typed value is left to its type error."""
    try:
        return cross_group_problems(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    except Exception:  # e.g. comparing an int with 'abc': the type problem already names that key
        return []


def absolutize_paths(cfg: DictConfig) -> None:
    """Make `paths.*` absolute against the working directory, before anything interpolates them.

    Plain values become absolute paths; `${paths.runs_dir}/...`-style values then follow automatically.
    """
    paths = cfg.get("paths")
    if not isinstance(paths, DictConfig):
        return
    for key in list(paths.keys()):
        node = paths._get_node(key)
        raw = node._value()
        if not isinstance(raw, str) or (OmegaConf.is_interpolation(paths, key) and "${paths." in raw):
            continue
        try:
            value = paths[key]
        except Exception:  # reported by validate()
            continue
        if isinstance(value, str) and value:
            paths[key] = str(Path(value).expanduser().resolve())


def load_config(
    overrides: list[str] | tuple[str, ...] = (),
    config_dir: str | os.PathLike | None = None,
    check_model: bool = True,
) -> Config:
    """Compose, validate and resolve: the single entry point every subcommand uses.

    `check_model=False` skips the model-source check (qtts_sweep.config.model_source), for callers that only
    compose (e.g. tests of the shipped hub-model configs on a machine without those weights).
    """
    return finish(compose(overrides, config_dir), check_model)


def finish(cfg: DictConfig, check_model: bool = True) -> Config:
    """Absolute paths, validation, typed `Config` (drops Hydra's own `hydra` node if present)."""
    if "hydra" in cfg:
        from omegaconf import open_dict

        with open_dict(cfg):
            del cfg["hydra"]
    absolutize_paths(cfg)
    return validate(cfg, check_model)


def to_yaml(config: Config) -> str:
    """The resolved config as YAML with every URL's credentials masked (`util.urls.redact_url`): what `check`
    prints and what each checkpoint keeps as its `config.yaml` (promotion takes tracking and paths from today's
    config, never from a stored one, so nothing reads a masked URL back)."""
    from qtts_sweep.util.urls import redact_url

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return redact_url(node) if isinstance(node, str) and "://" in node else node

    return OmegaConf.to_yaml(clean(OmegaConf.to_container(OmegaConf.structured(config), resolve=True)))
