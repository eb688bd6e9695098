"""The driver's side of the worker pipe: starting, talking to and stopping the persistent trial worker.

Messages (tuples over a `multiprocessing` Pipe):
  driver -> worker: ("warm", TrialRequest) | ("trial", TrialRequest) | ("prune", bool) | ("stop",)
  worker -> driver: ("warmed", {phase: seconds}) | ("epoch", epoch, metrics, reused, training_key) | ("done", dict)
                    | ("lines", lines scored, lines in all, [[step, per-line score], ...])  (reply: "prune")
                    | ("pruned", epoch) | ("pruned", epoch, lines scored) | ("failed", kind, message)
                    | ("phase", text)  (what the trial does now, for the progress line; no reply)
  and, made up by `WorkerHandle.recv` when the process is gone: ("died", exitcode)

Owns: the message vocabulary, `TrialRequest`, the worker process's life cycle (start on demand, restart after a
death, stop) and how it starts: forked from a multiprocessing fork server that imported the heavy libraries once
(sweep/preload.py), so a restart after a crash, and every driver after the first in one process, skips ~10 s of
imports; the driver's environment at the start travels with each worker (the fork server's is the one it had when
it began). Does not own: what the worker does with a request (worker.py) or what the driver does with a reply.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import signal
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtts_sweep.config.schema import Config

CRASH_ENV = "QTTS_TEST_CRASH"  # test hook: "3:segfault,5:raise" makes those trial numbers fail on purpose


@dataclass
class TrialRequest:
    number: int
    config: Config
    crash: str | None = None  # test hook: "segfault" | "raise" | "nan" | "leaselost" (see worker.inject_crash)
    base: bool = False  # score the base model (no adapter) on the same lines, for the listening page
    fidelity: Any = None  # a fidelity.Fidelity: score lines in chunks, asking the pruner between them


def crash_plan() -> dict[int, str]:
    """{trial number: failure kind} from CRASH_ENV (tests of crash isolation; never set by a sweep file)."""
    plan = {}
    for item in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        number, kind = item.split(":")
        plan[int(number)] = kind
    return plan


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker process died with {name}{hint}"
    return f"worker process exited with code {exitcode}"


_LIVE: weakref.WeakSet = weakref.WeakSet()  # handles with a worker started (stopped at interpreter exit)


@functools.cache
def _stop_at_exit() -> None:
    """Stop every live worker when the driver's interpreter exits, whatever skipped `WorkerHandle.stop` (a signal
    between two lines, an exception). The worker ignores SIGTERM, so multiprocessing's own clean-up at exit (SIGTERM,
    then a join without a time limit) would wait for it forever. Registered after multiprocessing's (the first
    worker start imports it), so atexit runs this one first."""
    atexit.register(lambda: [handle.stop() for handle in list(_LIVE)])


PRELOAD = "qtts_sweep.sweep.preload"  # what the fork server imports before it forks the first worker
START_ENV = "QTTS_WORKER_START"  # "spawn": every worker a fresh interpreter (the way out if a fork ever misbehaves)


def worker_context() -> Any:
    """The multiprocessing context workers start from: a fork server that has imported torch, transformers, qwen-tts,
    MLflow and the trial's own modules (the preload module; its import failures are the fork server's to ignore,
    the worker imports again and reports them as the trial's). Linux and macOS have it; elsewhere, or with
    QTTS_WORKER_START=spawn, spawn (each start pays the imports again)."""
    if os.environ.get(START_ENV) == "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD])  # takes effect when the fork server starts (first worker of the process)
    return ctx


class WorkerHandle:
    """A worker process running `target(conn, threads, driver pid, environment)`, started on demand and restarted
    after it dies."""

    def __init__(self, target: Callable[..., None], threads: int | None = None) -> None:
        self._target = target
        self._threads = threads
        self._ctx = worker_context()
        self.proc = None
        self.conn = None
        self.starts = 0
        self.warming = False
        self.warm_wait = 0.0  # seconds the driver waited for the worker's start-up (benchmark accounting)
        self.warm_phases: dict[str, float] = {}  # the worker's own timing of its warm-up (dataset, model)

    def ensure(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            return
        parent, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(
            target=self._target,
            args=(child, self._threads, os.getpid(), dict(os.environ)),
            daemon=True,
            name="qtts-sweep-worker",
        )
        self.proc.start()
        _LIVE.add(self)
        _stop_at_exit()
        child.close()
        self.conn = parent
        self.starts += 1

    def warm(self, cfg: Config) -> None:
        """Start the worker and let it load data and model while the driver does other set-up."""
        self.ensure()
        self.send(("warm", TrialRequest(-2, cfg)))
        self.warming = True

    def send(self, msg: tuple) -> None:
        self.conn.send(msg)

    def settle(self) -> None:
        """Consume the warm-up reply, if one is pending (a dead worker is noticed by the next recv)."""
        if self.warming:
            self.warming = False
            t0 = time.perf_counter()
            msg = self.recv()
            self.warm_wait += time.perf_counter() - t0
            if msg[0] == "warmed" and len(msg) > 1:
                self.warm_phases = msg[1]

    def submit(self, request: TrialRequest) -> None:
        """Send a trial (or base-model) request to a live, warmed worker."""
        self.ensure()
        self.settle()
        self.send(("trial", request))

    def recv(self) -> tuple:
        """Next message; ("died", exitcode) when the worker process is gone."""
        while True:
            if self.conn.poll(0.2):
                try:
                    return self.conn.recv()
                except (EOFError, ConnectionResetError):
                    pass
            if not self.proc.is_alive():
                self.proc.join()
                self.warming = False
                return ("died", self.proc.exitcode)

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(("stop",))
                self.proc.join(timeout=10)
            except (BrokenPipeError, OSError):
                pass
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        _LIVE.discard(self)
        self.proc = None
