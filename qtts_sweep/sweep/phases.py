"""Where a sweep's wall time goes: cheap wall-clock timers around the driver's and the worker's existing phases.

A `PhaseClock` adds up seconds per phase name (`with clock("storage"): ...`). Phases nest *exclusively*: time spent
in an inner phase (an MLflow call inside a block of storage calls) counts for the inner one only, so the phases of
one process never add up to more than its wall time. Two perf_counter calls per phase: no profiler, nothing that
changes what a sweep does. The driver keeps one clock for its whole life (its own calls plus the worker's reported
phases while it waits for them) and stores it in the study (`PHASES_PREFIX` user attribute, one per driver), where
`qtts-sweep bench sweep` / `bench workers` read it to print the breakdown.

Owns: the phase names and their order, the clock, the study attribute, the breakdown table. Does not own: what is
timed (driver.py, worker.py) or the benches (tools/bench.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# name -> label, in the order of the breakdown. Serial work only: a worker's warm-up overlapping the driver's set-up
# counts as far as the driver waited for it (`warm_up`).
PHASES = {
    "worker_start": "worker start (fork server, imports)",
    "model": "model load",
    "dataset": "dataset load/check",
    "storage": "storage (Optuna calls, journal lock)",
    "mlflow": "MLflow (tracking calls, server start)",
    "training": "training",
    "evaluation": "evaluation (synthesis + scoring)",
    "report": "report (base-model audio)",
}
PHASES_PREFIX = "phases:"  # study user attribute `phases:<host>:<pid>` = {phase: seconds, "wall": seconds}


class PhaseClock:
    """Seconds per phase, exclusive of nested phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._stack: list[list] = []  # [name, start, seconds of nested phases]

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            spent = time.perf_counter() - frame[1]
            self.add(name, spent - frame[2])
            if self._stack:
                self._stack[-1][2] += spent

    def add(self, name: str, seconds: float) -> None:
        """Add seconds measured elsewhere (the worker's phases, reported with its reply)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + max(seconds, 0.0)

    def merge(self, phases: dict[str, float]) -> None:
        for name, seconds in phases.items():
            if name in PHASES:
                self.add(name, seconds)

    def timed(self, obj: Any, name: str) -> Any:
        """`obj` with every method call timed as phase `name` (the tracker: every call of it is MLflow)."""
        return _Timed(obj, self, name)

    def as_dict(self) -> dict[str, float]:
        return dict(self.seconds)


class _Timed:
    def __init__(self, obj: Any, clock: PhaseClock, name: str) -> None:
        self._obj, self._clock, self._name = obj, clock, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._obj, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._clock(self._name):
                return value(*args, **kwargs)

        return call


def warm_up(waited: float, worker: dict[str, float]) -> dict[str, float]:
    """The part of a worker's warm-up the driver waited for, by phase.

    The worker starts (the fork server's imports, the first time), then checks the dataset, then loads the model,
    while the driver sets up the study; the driver waits only for the last `waited` seconds of that, so the tail is
    attributed: model load first, then dataset, the rest to the start.
    """
    out = dict.fromkeys(("worker_start", "dataset", "model"), 0.0)
    left = max(waited, 0.0)
    for name in ("model", "dataset"):
        out[name] = min(left, worker.get(name, 0.0))
        left -= out[name]
    out["worker_start"] = left
    return out


def record(study: Any, clock: PhaseClock, wall: float) -> None:
    """Store this driver's phases in the study (read by the benches; one attribute per driver process)."""
    from qtts_sweep.sweep.recovery import driver_host

    study.set_user_attr(f"{PHASES_PREFIX}{driver_host()}:{os.getpid()}", {**clock.as_dict(), "wall": wall})


def read(study: Any) -> list[dict[str, float]]:
    """Every driver's recorded phases."""
    return [v for k, v in study.user_attrs.items() if k.startswith(PHASES_PREFIX) and isinstance(v, dict)]


def mean_phases(drivers: list[dict[str, float]]) -> dict[str, float]:
    """Per driver, on average (drivers run side by side: their sum would exceed the wall time)."""
    n = max(len(drivers), 1)
    return {name: sum(d.get(name, 0.0) for d in drivers) / n for name in PHASES}


def breakdown(columns: dict[str, tuple[float, dict[str, float]]]) -> list[str]:
    """The table: one row per phase, one column per compared run (seconds and % of its wall), then what the named
    phases leave unaccounted (the driver's own loop, pipes, process start of launched drivers) and the wall."""
    heads = list(columns)
    width = max(len(label) for label in PHASES.values()) + 2
    lines = ["where the time goes (s, % of wall):", " " * width + "".join(f"{h:>20}" for h in heads)]

    def cell(seconds: float, wall: float) -> str:
        return f"{seconds:9.2f} s {seconds / wall if wall > 0 else 0.0:6.1%}"

    for name, label in PHASES.items():
        cells = "".join(f"{cell(columns[h][1].get(name, 0.0), columns[h][0]):>20}" for h in heads)
        lines.append(f"{label:<{width}}{cells}")
    other = {h: columns[h][0] - sum(columns[h][1].get(n, 0.0) for n in PHASES) for h in heads}
    lines.append(f"{'other (unaccounted)':<{width}}" + "".join(f"{cell(other[h], columns[h][0]):>20}" for h in heads))
    lines.append(f"{'wall':<{width}}" + "".join(f"{cell(columns[h][0], columns[h][0]):>20}" for h in heads))
    return lines
