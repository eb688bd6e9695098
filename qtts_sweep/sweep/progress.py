"""A sweep's progress for a person: trials done / budget (complete, pruned, failed), the running trial's phase,
the best objective so far and its trial, elapsed time and an estimate of the time left.

On a terminal it is one live line (a tqdm bar; the driver's own lines print above it). Elsewhere (CI, a log file)
it prints one plain line per finished trial. One driver feeds it directly (`SweepDriver(progress=...)`: trial
started, worker messages, trial finished); with `--workers N` the launcher polls the study's storage once a second
(`watch_drivers`), relaying the drivers' output above the line.

The time left is (budget - done) x (elapsed / trials finished since this progress started), so trials finished
by an earlier run of a resumed study do not make the estimate optimistic.

Owns: what the progress line says and when it is printed. Does not own: the trial loop (driver.py), the budget
rules (recovery.budget_used), which trial is best (selection.best_summary).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """45s, 3m05s, 2h07m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class NullProgress:
    """What the driver talks to when nobody shows progress (tests, library use)."""

    def log(self, line: str) -> None:
        pass

    def attach(self, study: Any) -> None:
        pass

    def trial_started(self, number: int, epochs: int) -> None:
        pass

    def message(self, msg: tuple) -> None:
        pass

    def trial_finished(self, number: int) -> None:
        pass

    def close(self) -> None:
        pass


class SweepProgress(NullProgress):
    """The progress of one study toward its budget, drawn live on a TTY or as one plain line per trial."""

    def __init__(
        self,
        budget: int,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.t0 = clock()
        self.study: Any = None
        self.counts = (0, 0, 0)
        self.done_before: int | None = None
        self.best: tuple[float, int] | None = None  # (objective, trial number); None for multi-objective studies
        self.running: dict[int, str] = {}  # trial number -> phase
        self.epochs: dict[int, int] = {}
        self._lock = threading.Lock()  # drivers' output relays and the poller share the line
        self._bar = None

    # -- what the driver calls -------------------------------------------------------------------------------
    def log(self, line: str) -> None:
        """A line of the driver's own, printed above the live line."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def attach(self, study: Any) -> None:
        self.study = study
        self.refresh()

    def trial_started(self, number: int, epochs: int) -> None:
        self.running[number] = "starting"
        self.epochs[number] = epochs
        self.draw()

    def message(self, msg: tuple) -> None:
        """A worker message about the running trial: ("epoch", e, metrics, reused, key), ("phase", text) or
        ("lines", scored, total, values)."""
        if not self.running:
            return
        number = max(self.running)
        if msg[0] == "epoch":
            stored = " (stored)" if msg[3] else ""
            self.running[number] = f"training epoch {msg[1]}/{self.epochs.get(number, '?')}{stored}"
        elif msg[0] == "phase":
            self.running[number] = str(msg[1])
        elif msg[0] == "lines":  # multi-fidelity: a chunk of lines scored (sweep/fidelity.py)
            self.running[number] = f"scored {msg[1]}/{msg[2]} lines"
        else:
            return
        self.draw()

    def trial_finished(self, number: int) -> None:
        self.running.pop(number, None)
        self.refresh()
        if not self.live:
            self._print_plain(number)
        self.draw()

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    # -- reading the study -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Counts and best trial from the study (the storage is the truth when several drivers share it)."""
        if self.study is None:
            return
        from qtts_sweep.sweep.recovery import budget_used

        self.counts = budget_used(self.study)
        if self.done_before is None:
            self.done_before = sum(self.counts)
        self.best = _best(self.study)

    # -- what it says ----------------------------------------------------------------------------------------
    def done(self) -> int:
        return sum(self.counts)

    def time_left(self) -> float | None:
        finished_here = self.done() - (self.done_before or 0)
        if finished_here <= 0:
            return None
        return max(0, self.budget - self.done()) * (self.clock() - self.t0) / finished_here

    def status(self) -> str:
        """`3 complete, 1 pruned, 0 failed | best 0.2345 (trial 1) | 1m20s elapsed, ~2m40s left`."""
        c, p, f = self.counts
        parts = [f"{c} complete, {p} pruned, {f} failed"]
        if self.best is not None:
            parts.append(f"best {self.best[0]:.4f} (trial {self.best[1]})")
        left = self.time_left()
        timing = f"{format_duration(self.clock() - self.t0)} elapsed"
        parts.append(timing + (f", ~{format_duration(left)} left" if left is not None else ""))
        return " | ".join(parts)

    def _running_text(self) -> str:
        if len(self.running) == 1:
            number, phase = next(iter(self.running.items()))
            return f"trial {number}: {phase}"
        if self.running:
            return "running trials " + ", ".join(str(n) for n in sorted(self.running))
        return ""

    def _print_plain(self, number: int) -> None:
        state = _state_of(self.study, number)
        self.log(f"[{self.done()}/{self.budget}] trial {number} {state} | {self.status()}")

    def draw(self) -> None:
        if not self.live:
            return
        with self._lock:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=self.budget,
                    file=self.stream,
                    dynamic_ncols=True,
                    bar_format="sweep {n}/{total} |{bar:12}| {desc}",
                    leave=True,
                )
            self._bar.n = min(self.done(), self.budget)
            running = self._running_text()
            self._bar.set_description_str((running + " | " if running else "") + self.status(), refresh=False)
            self._bar.refresh()


def _best(study: Any) -> tuple[float, int] | None:
    from qtts_sweep.sweep.selection import best_summary

    if len(study.directions) > 1:
        return None
    best = best_summary(study)
    if best is None or not best["values"] or not math.isfinite(best["values"][0]):
        return None
    return float(best["values"][0]), int(best["number"])


def _state_of(study: Any, number: int) -> str:
    if study is None:
        return "finished"
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            if t.state.name == "COMPLETE" and t.values and len(t.values) == 1:
                return f"complete {t.values[0]:.4f}"
            return {"FAIL": "failed"}.get(t.state.name, t.state.name.lower())
    return "finished"


def watch_drivers(
    procs: list[subprocess.Popen], progress: SweepProgress, open_study: Callable[[], Any], period: float = 1.0
) -> list[int]:
    """Wait for driver processes, relaying their output lines (when piped) above the progress line and polling
    the study's storage every `period` seconds for counts, best trial and running trials. Returns exit codes."""
    relays = [
        threading.Thread(target=_relay, args=(p.stdout, progress), daemon=True) for p in procs if p.stdout is not None
    ]
    for t in relays:
        t.start()
    study = None
    seen: set[int] | None = None  # trials already finished when watching began get no line of their own
    while True:
        codes = [p.poll() for p in procs]
        try:
            study = study or open_study()
            progress.attach(study)
            seen = _poll_trials(study, progress, seen)
        except Exception:  # noqa: S110 - the storage may be busy or not created yet; the next poll tries again
            pass
        if all(c is not None for c in codes):
            break
        time.sleep(period)
    for t in relays:
        t.join(timeout=5)
    progress.close()
    return [int(c) for c in codes]


def _poll_trials(study: Any, progress: SweepProgress, seen: set[int] | None) -> set[int]:
    """Running trials from the storage; trials that finished since the last poll get their line."""
    running, finished = {}, set()
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING":
            running[t.number] = "running"
        elif t.state.name in ("COMPLETE", "PRUNED", "FAIL"):
            finished.add(t.number)
    progress.running = running
    for number in sorted(finished - seen) if seen is not None else ():
        progress.trial_finished(number)
    progress.draw()
    return finished


def _relay(pipe: Any, progress: SweepProgress) -> None:
    for raw in pipe:
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        progress.log(line.rstrip("\n"))
