"""The package's shape, checked from its source: imports point down, no private names cross modules, and each
heavy dependency stays in the one place that owns it.

Every import counts, including those inside functions (the package imports heavy libraries lazily, which would
otherwise hide these links from a reader). Each rule is a plain function over the parsed source, so a test can
also run it on a scratch copy of the package with a rule broken on purpose (see the last tests).
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qtts_sweep"
ROOT = "qtts_sweep"
# Subpackages from the bottom up: a package may import only from packages strictly below it (and itself).
# metrics is pure functions on numbers and audio, so the config schema can validate objective weights against it.
# tracking sits low: its MLflow module
# imports nothing of the package but the config schema. data sits above model: preparing a dataset encodes codec
# codes with the model's own speech tokenizer.
LAYERS = [
    {"util"},
    {"metrics"},
    {"config"},
    {"tracking"},
    {"model"},
    {"data"},
    {"train"},
    {"evaluate"},
    {"sweep"},
    {"production"},
    {"tools"},
    {"cli"},
]
MLFLOW_HOME = "qtts_sweep.tracking"
QWEN_HOME = "qtts_sweep.model"  # the only package that imports qwen_tts (its internals change between releases)
OPTUNA_HOME = "qtts_sweep.sweep"
# Optuna's study machinery: creating studies, asking and telling, samplers and pruners (reading a study that
# exists, through `qtts_sweep.sweep.storage`, is fine anywhere above the sweep package).
OPTUNA_MACHINERY = {"create_study", "ask", "tell", "samplers", "pruners", "_storage", "_trial_id"}
# metrics/ scores audio and numbers; it must not reach for the TTS model or its code.
METRICS_FORBIDDEN = ("qwen_tts", "peft", "qtts_sweep.model", "qtts_sweep.train", "qtts_sweep.evaluate")


@dataclass
class Source:
    module: str
    path: Path
    tree: ast.Module


def load(package: Path) -> dict[str, Source]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        out[module] = Source(module, path, ast.parse(path.read_text(), str(path)))
    return out


def imports(src: Source, modules: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import anywhere in the file."""
    found = []
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in modules:  # `from qtts_sweep.sweep import record` imports a module
                    found.append((sub, [], node.lineno))
                else:
                    found.append((node.module, [a.name], node.lineno))
    return found


def internal_edges(sources: dict[str, Source]) -> dict[str, set[str]]:
    mods = set(sources)
    return {
        m: {name for name, _, _ in imports(s, mods) if name in mods and name != m and sources[name].tree.body}
        for m, s in sources.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else None
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return None


def layering_violations(sources: dict[str, Source]) -> list[str]:
    out = []
    for m, targets in internal_edges(sources).items():
        here = _layer(m)
        for t in targets:
            there = _layer(t)
            same_pkg = m.split(".")[:2] == t.split(".")[:2]
            if here is not None and there is not None and not same_pkg and there >= here:
                out.append(f"{m} imports {t} (layer {there} >= {here}): imports must point down")
    return out


def private_imports(sources: dict[str, Source]) -> list[str]:
    mods = set(sources)
    out = []
    for m, s in sources.items():
        for target, names, line in imports(s, mods):
            if not target.startswith(ROOT) or target == m:
                continue
            out += [f"{s.path.name}:{line} imports {n} from {target}" for n in names if _private(n)]
        aliases = _module_aliases(s, mods)
        for node in ast.walk(s.tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if _private(node.attr) and aliases[node.value.id] != m:
                    out.append(f"{s.path.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_aliases(s: Source, mods: set[str]) -> dict[str, str]:
    aliases = {}
    for node in ast.walk(s.tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if f"{node.module}.{a.name}" in mods:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods and a.asname:
                    aliases[a.asname] = a.name
    return aliases


def foreign_imports(sources: dict[str, Source], lib: str, home: str) -> list[str]:
    out = []
    for m, s in sources.items():
        if m == home or m.startswith(home + "."):
            continue
        for target, _, line in imports(s, set(sources)):
            if target == lib or target.startswith(lib + "."):
                out.append(f"{s.path.name}:{line} imports {target} outside {home}")
    return out


def optuna_machinery_outside(sources: dict[str, Source]) -> list[str]:
    out = []
    for m, s in sources.items():
        if m == OPTUNA_HOME or m.startswith(OPTUNA_HOME + "."):
            continue
        for target, names, line in imports(s, set(sources)):
            if target.startswith("optuna") and ({*target.split("."), *names} & OPTUNA_MACHINERY):
                out.append(f"{s.path.name}:{line} imports {target} {names}")
        for node in ast.walk(s.tree):
            if isinstance(node, ast.Attribute) and node.attr in OPTUNA_MACHINERY:
                out.append(f"{s.path.name}:{node.lineno} uses .{node.attr}")
    return out


def metrics_reaching_for_the_model(sources: dict[str, Source]) -> list[str]:
    out = []
    for m, s in sources.items():
        if not m.startswith("qtts_sweep.metrics"):
            continue
        for target, _, line in imports(s, set(sources)):
            if any(target == f or target.startswith(f + ".") for f in METRICS_FORBIDDEN):
                out.append(f"{s.path.name}:{line} imports {target}")
    return out


def printing_to_stderr(sources: dict[str, Source]) -> list[str]:
    """The package logs its warnings (util/log.py: one logger per module), never prints them to stderr."""
    out = []
    for s in sources.values():
        for node in ast.walk(s.tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                for kw in node.keywords:
                    if kw.arg == "file" and "stderr" in ast.unparse(kw.value):
                        out.append(f"{s.path.name}:{node.lineno} prints to stderr (use log = get_logger(__name__))")
    return out


STORE_LAYOUT_HOME = "qtts_sweep.train"
STORE_NAMES = ("epoch-", "key.json", "training-log")  # the store's folder and file names (train/store.py)


def store_layout_outside(sources: dict[str, Source]) -> list[str]:
    """Only train/ knows the store's layout: elsewhere a checkpoint is a `CheckpointRef` / `CheckpointStore` call,
    never a path built from `epoch-<e>` or `key.json` by hand."""
    out = []
    for m, s in sources.items():
        if m == STORE_LAYOUT_HOME or m.startswith(STORE_LAYOUT_HOME + "."):
            continue
        for node in ast.walk(s.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(node.value.startswith(n) or f"/{n}" in node.value for n in STORE_NAMES):
                    out.append(f"{s.path.name}:{node.lineno} spells the store layout ({node.value!r})")
    return out


# Optuna internals the package once reached for (retries by overriding RDBStorage's private methods, the trial's
# storage id for heartbeats, the enqueued point in system_attrs): public API only, in sweep/ too.
OPTUNA_PRIVATE = {
    "_trial_id",
    "_storage",
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
    "system_attrs",
    "fixed_params",
    "record_heartbeat",
}


def optuna_private_anywhere(sources: dict[str, Source]) -> list[str]:
    out = []
    for s in sources.values():
        for node in ast.walk(s.tree):
            if isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE:
                out.append(f"{s.path.name}:{node.lineno} uses .{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = set(re.findall(r"[A-Za-z_]+", node.value))
                if words & OPTUNA_PRIVATE and not node.value.startswith(("A ", "The ", "`")):
                    out.append(f"{s.path.name}:{node.lineno} names {sorted(words & OPTUNA_PRIVATE)} in a string")
    return out


RESULT_HOME = "qtts_sweep.sweep.result"
# what a completed trial carries (TrialResult.user_attrs); fidelity.py writes lines_used/lines_total as it goes
RESULT_ATTRS = {"checkpoint", "eval_dir", "training_key", "summary", "trained_epochs", "epoch_reached", "constraints"}


def trial_record_read_by_hand(sources: dict[str, Source]) -> list[str]:
    """A trial's result is read through `sweep.result.StoredTrial`, not by `user_attrs["checkpoint"]` /
    `user_attrs.get("eval_dir")` in each consumer (report, gc, promote, listen, selection once did)."""
    out = []
    for m, s in sources.items():
        if m == RESULT_HOME:
            continue
        for node in ast.walk(s.tree):
            target = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target, name = node.value, node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                if node.args and isinstance(node.args[0], ast.Constant):
                    target, name = node.func.value, node.args[0].value
            if isinstance(target, ast.Attribute) and target.attr == "user_attrs" and name in RESULT_ATTRS:
                out.append(f"{s.path.name}:{node.lineno} reads user_attrs[{name!r}] (use StoredTrial.of)")
    return out


RULES = {
    "trial_record": trial_record_read_by_hand,
    "cycles": lambda src: [" -> ".join(c) for c in cycles(internal_edges(src))],
    "layering": layering_violations,
    "private": private_imports,
    "mlflow": lambda src: foreign_imports(src, "mlflow", MLFLOW_HOME),
    "optuna": optuna_machinery_outside,
    "metrics": metrics_reaching_for_the_model,
    "logging": printing_to_stderr,
    "qwen_tts": lambda src: foreign_imports(src, "qwen_tts", QWEN_HOME),
    "store_layout": store_layout_outside,
    "optuna_private": optuna_private_anywhere,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_package_keeps_the_rule(rule):
    assert RULES[rule](load(PACKAGE)) == []


def _doc_line(doc: str, label: str) -> str:
    """The text after `label` up to the next blank line or line starting with another label."""
    match = re.search(rf"^{re.escape(label)}(.*?)(?=\n\n|\n[A-Z][a-z ]+: |\Z)", doc, flags=re.S | re.M)
    assert match, f"no `{label}` line"
    return match.group(1)


def subpackage_docs_mismatch(package: Path) -> list[str]:
    """Each subpackage's docstring lists its modules (`Modules:`) and the subpackages it imports (`Imports from
    the package:`); both must match the files and the imports."""
    sources = load(package)
    used: dict[str, set[str]] = {}
    for m, s in sources.items():
        parts = m.split(".")
        for target, _, _ in imports(s, set(sources)):
            if target.startswith(ROOT + ".") and len(parts) > 1 and target.split(".")[1] != parts[1]:
                used.setdefault(parts[1], set()).add(target.split(".")[1])
    out = []
    for init in sorted(package.glob("*/__init__.py")):
        name = init.parent.name
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        try:
            listed = set(re.findall(r"`(\w+)`", _doc_line(doc, "Modules:")))
            said = _doc_line(doc, "Imports from the package:")
        except AssertionError as exc:
            out.append(f"{name}/__init__.py: {exc}")
            continue
        files = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
        if listed != files:
            out.append(f"{name}/__init__.py lists {sorted(listed)}, the folder has {sorted(files)}")
        claimed = set(re.findall(r"[a-z_]+", said)) - {"nothing"}
        if claimed != used.get(name, set()):
            out.append(f"{name}/__init__.py says it imports {sorted(claimed)}, it imports {sorted(used.get(name, []))}")
    return out


def relative_imports(sources: dict[str, Source]) -> list[str]:
    """Absolute imports only (the import graph stays greppable): no `from . import x`."""
    return [
        f"{s.path.name}:{node.lineno} relative import"
        for s in sources.values()
        for node in ast.walk(s.tree)
        if isinstance(node, ast.ImportFrom) and node.level
    ]


def test_subpackage_docstrings_list_their_modules_and_imports():
    assert subpackage_docs_mismatch(PACKAGE) == []
    assert relative_imports(load(PACKAGE)) == []


def test_a_stale_module_list_or_a_relative_import_is_caught(tmp_path):
    copy = tmp_path / "qtts_sweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "train" / "newmodule.py").write_text('"""New."""\nfrom . import store  # noqa\n')
    found = subpackage_docs_mismatch(copy)
    assert any("train/__init__.py lists" in f for f in found), found
    assert relative_imports(load(copy)) == ["newmodule.py:2 relative import"]
    (copy / "train" / "newmodule.py").write_text('"""New."""\nfrom qtts_sweep.sweep import spec  # noqa\n')
    assert any("train/__init__.py says it imports" in f for f in subpackage_docs_mismatch(copy))


def test_every_subpackage_says_what_it_owns():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "own" in doc.lower(), f"{init}: the docstring should say what the package owns and does not own"


# Each rule broken once in a scratch copy of the package: the rule must see it.
BREAKS = {
    "cycles": ("util/fsio.py", "\nfrom qtts_sweep.config import schema  # noqa\n"),
    "layering": ("model/lora.py", "\nfrom qtts_sweep.sweep import spec  # noqa\n"),
    "private": ("sweep/report.py", "\nfrom qtts_sweep.sweep.recovery import _alive  # noqa\n"),
    "mlflow": ("sweep/report.py", "\ndef f():\n    import mlflow  # noqa\n"),
    "optuna": ("production/gc.py", "\ndef f(study):\n    return study.ask()\n"),
    "metrics": ("metrics/objective.py", "\ndef f():\n    from qtts_sweep.model import modeling  # noqa\n"),
    "qwen_tts": ("data/codes.py", "\ndef f():\n    from qwen_tts import Qwen3TTSTokenizer  # noqa\n"),
    "optuna_private": ("sweep/storage.py", "\ndef f(trial):\n    return trial._trial_id\n"),
    "trial_record": ("production/gc.py", '\ndef f(trial):\n    return trial.user_attrs.get("checkpoint")\n'),
    "store_layout": ("production/gc.py", '\ndef f(store, key, e):\n    return store / key / f"epoch-{e}"\n'),
    "logging": ("sweep/report.py", "\ndef f():\n    import sys\n    print('warning: x', file=sys.stderr)\n"),
}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_a_broken_rule_is_caught(tmp_path, rule):
    copy = tmp_path / "qtts_sweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    if rule == "cycles":  # make config import util and util import config
        (copy / "config" / "schema.py").write_text(
            (copy / "config" / "schema.py").read_text() + "\nfrom qtts_sweep.util import fsio  # noqa\n"
        )
    name, extra = BREAKS[rule]
    (copy / name).write_text((copy / name).read_text() + extra)
    assert RULES[rule](load(copy)), f"rule {rule} missed the break in {name}"


def test_both_trackers_and_registries_implement_their_protocols(tmp_path):
    """Callers see `tracking.tracker.Tracker` (run logging) and `Registry` (promoted bundles); the MLflow and null
    implementations both implement every method with the same parameters (no inheritance hides a missing one)."""
    import inspect

    from qtts_sweep.config.schema import TrackingConfig
    from qtts_sweep.tracking.mlflow_tracker import MlflowTracker
    from qtts_sweep.tracking.registry import MlflowRegistry
    from qtts_sweep.tracking.tracker import NullRegistry, NullTracker, Registry, Tracker

    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    for protocol, impls, needed in (
        (Tracker, (NullTracker(), MlflowTracker(cfg)), "finish_trial"),
        (Registry, (NullRegistry(), MlflowRegistry(cfg)), "register_bundle"),
    ):
        names = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
        assert needed in names
        for impl in impls:
            assert isinstance(impl, protocol)
            for name in names:
                want = list(inspect.signature(getattr(protocol, name)).parameters)[1:]
                assert list(inspect.signature(getattr(impl, name)).parameters) == want, (type(impl).__name__, name)


def test_test_modules_share_helpers_only_through_tests_helpers():
    """Shared test code lives in tests/helpers/: no test module imports conftest or another test module."""
    tests_dir = Path(__file__).resolve().parent
    bad = []
    for path in sorted(tests_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
                if (
                    mod == "tests.conftest"
                    or mod.startswith("tests.test_")
                    or (mod == "tests" and any(a.name.startswith("test_") or a.name == "conftest" for a in node.names))
                ):
                    bad.append(f"{path.relative_to(tests_dir)}:{node.lineno} imports {mod}")
    assert bad == []
