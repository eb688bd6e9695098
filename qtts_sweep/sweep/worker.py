"""The sweep's trial worker: a separate process that keeps the base model loaded across trials.

The driver sends one trial at a time over a pipe (protocol.py); the worker makes sure the checkpoint exists
(reuse / resume / train, reporting each epoch's validation loss back and obeying the pruner's answer), scores the
val lines at the trial's LoRA scale with the one scoring function (`qtts_sweep.evaluate.scoring.Scorer`), and
returns a `TrialResult` (result.py). A segfault or out-of-memory kill takes only this process down: the driver
records the trial as failed and starts a new worker.

Owns: serving requests, per-process caches (checked datasets, model identities, the scorer), timing its own
phases (dataset, model, training, evaluation: `phases.PhaseClock`, sent with each reply). Does not own: Optuna,
MLflow, the message vocabulary (protocol.py).
"""

from __future__ import annotations

import dataclasses
import signal
import time
import traceback
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.sweep.phases import PhaseClock
from qtts_sweep.sweep.protocol import TrialRequest
from qtts_sweep.sweep.result import TrialResult
from qtts_sweep.util import quiet


class Pruned(Exception):
    """The pruner stopped the trial: args (epoch,) during training, (epoch, lines scored) during scoring."""


class WorkerState:
    """What a worker process keeps between trials: checked datasets, model identities, the scorer, and the seconds
    spent per phase since the last reply (`take_phases`)."""

    def __init__(self) -> None:
        from qtts_sweep.evaluate.scoring import Scorer

        self.scorer = Scorer()
        self.datasets: dict[tuple, Any] = {}
        self.model_ids: dict[str, str] = {}
        self.clock = PhaseClock()

    def take_phases(self) -> dict[str, float]:
        """Seconds per phase since the last call (sent to the driver with a reply)."""
        out, self.clock = self.clock.as_dict(), PhaseClock()
        return {k: v for k, v in out.items() if v}

    def model_id(self, cfg: Config) -> str:
        from qtts_sweep.model.modeling import ensure_model_folder
        from qtts_sweep.train.store import model_identity

        if cfg.model.source not in self.model_ids:
            self.model_ids[cfg.model.source] = model_identity(ensure_model_folder(cfg.model))
        return self.model_ids[cfg.model.source]

    def dataset(self, cfg: Config) -> Any:
        """The prepared dataset, checked once per worker (a sweep does not change its data under its own feet)."""
        from qtts_sweep.data.prepare import load_dataset

        key = (dataclasses.astuple(cfg.data), cfg.model.source, cfg.paths.data_dir, cfg.paths.runs_dir)
        if key not in self.datasets:
            with self.clock("dataset"):
                self.datasets[key] = load_dataset(cfg)
        return self.datasets[key]

    def run(self, cfg: Config):
        """The training run (key, data, store) of `cfg`, with the model loaded for it."""
        from qtts_sweep.train.loop import resolve_run

        dataset = self.dataset(cfg)
        with self.clock("model"):
            model_id = self.model_id(cfg)
        run = resolve_run(cfg, dataset, model_id)
        with self.clock("model"):
            self.scorer.ensure(cfg)
        return run


def inject_crash(kind: str | None) -> None:
    """Failure injection for tests of crash isolation (never set by a sweep file)."""
    if kind == "segfault":
        import ctypes

        ctypes.string_at(0)  # dereference NULL: the process dies with SIGSEGV
    if kind == "raise":
        raise RuntimeError("injected failure (test)")
    if kind == "leaselost":
        from qtts_sweep.train.lease import LeaseLost

        raise LeaseLost("injected lost lease (test)")


def _epoch_callback(req: TrialRequest, conn: Any, key: str, paused: list[float], clock: PhaseClock):
    """on_epoch for training: report to the driver, wait for its pruning answer (time spent waiting -> paused,
    and a phase of its own: the driver times what it does meanwhile)."""
    from qtts_sweep.train.loop import TrainingDiverged

    def on_epoch(epoch: int, metrics: dict[str, float], reused: bool) -> None:
        if req.crash == "nan" and not reused:
            metrics = {**metrics, "val_loss": float("nan")}
        t = time.perf_counter()
        with clock("paused"):
            conn.send(("epoch", epoch, metrics, reused, key))
            msg = conn.recv()
        paused[0] += time.perf_counter() - t
        if msg[0] == "prune" and msg[1]:
            raise Pruned(epoch)
        if req.crash == "nan" and not reused:
            raise TrainingDiverged(f"non-finite validation loss at epoch {epoch} (injected)")

    return on_epoch


def run_trial(req: TrialRequest, state: WorkerState, conn: Any) -> TrialResult:
    from qtts_sweep.evaluate.scoring import Point
    from qtts_sweep.train.loop import ensure_epoch

    cfg = req.config
    inject_crash(req.crash)
    t0 = time.perf_counter()
    run = state.run(cfg)
    t_setup = time.perf_counter() - t0
    paused = [0.0]  # waiting for the driver's pruning answers (orchestration, not training)
    t1 = time.perf_counter()
    on_epoch = _epoch_callback(req, conn, run.key, paused, state.clock)
    loaded = state.scorer.synth.loaded
    with state.clock("training"):
        trained = ensure_epoch(cfg, cfg.eval.epoch, on_epoch=on_epoch, run=run, progress=False, loaded=loaded)
    t_train = time.perf_counter() - t1 - paused[0]
    if trained.trained:
        state.scorer.adapter_changed()
    t2 = time.perf_counter()
    conn.send(("phase", f"synthesis and scoring at scale {cfg.eval.lora_scale:g}"))
    point = Point(run.key, cfg.eval.epoch, trained.checkpoint, cfg.eval.lora_scale)
    with state.clock("evaluation"):
        if req.fidelity is None:
            ev = state.scorer.score(cfg, run.dataset, point)
            result = TrialResult.of(trained, ev, lines=len({r["id"] for r in ev.per_line}))
        else:
            ev, objective, lines = _score_in_chunks(req, state, conn, run.dataset, point)
            result = TrialResult.of(trained, ev, lines=lines, objective=objective)
            result.summary["composite_of_means"] = ev.objective
    result.timings = {"setup_s": t_setup, "train_s": t_train, "eval_s": time.perf_counter() - t2}
    result.phases = state.take_phases()
    return result


def _score_in_chunks(req: TrialRequest, state: WorkerState, conn: Any, dataset: Any, point: Any):
    """Multi-fidelity (sweep/fidelity.py): score a growing prefix of the lines, send each chunk's new per-line
    scores, stop when the driver says prune. Returns (the all-lines result, mean per-line score, lines)."""
    from qtts_sweep.evaluate.scoring import held_out_lines
    from qtts_sweep.sweep import fidelity

    cfg = req.config
    ids = [ln.id for ln in held_out_lines(dataset, cfg.eval.split, cfg.eval.max_lines)]
    weights = cfg.eval.objective.objective_weights()
    sent = 0
    for n in fidelity.chunk_ends(len(ids), req.fidelity, cfg.eval.batch_size):
        ev = state.scorer.score(cfg, dataset, point, n_lines=n)
        values = fidelity.line_values(ev.per_line, ids, weights, (ev.ceiling or {}).get("per_line"))
        with state.clock("paused"):
            conn.send(("lines", n, len(ids), [list(v) for v in values[sent:]]))
            msg = conn.recv()
        sent = len(values)
        if msg[0] == "prune" and msg[1]:
            raise Pruned(cfg.eval.epoch, n)
    return ev, fidelity.line_mean(values), len(ids)


def run_base(req: TrialRequest, state: WorkerState) -> dict[str, Any]:
    """The base model on the val lines with the same speaker embedding and decoding (scale 0, no adapter)."""
    from qtts_sweep.evaluate.scoring import Point

    run = state.run(req.config)
    t0 = time.perf_counter()
    with state.clock("report"):
        ev = state.scorer.score(req.config, run.dataset, Point.base())
    timings = {"eval_s": time.perf_counter() - t0}
    return {"eval_dir": str(ev.dir), "objective": ev.objective, "timings": timings, "phases": state.take_phases()}


def _serve(msg: tuple, state: WorkerState, conn: Any) -> tuple:
    """The reply to one request (a `TrialResult`, or the base model's plain dict); any failure is the trial's,
    reported with its kind (the worker lives on)."""
    req: TrialRequest = msg[1]
    try:
        return ("done", run_base(req, state) if req.base else run_trial(req, state, conn))
    except Pruned as exc:
        return ("pruned", *exc.args)
    except Exception as exc:
        kind = "OutOfMemory" if "out of memory" in str(exc).lower() else type(exc).__name__
        return ("failed", kind, f"{exc}\n{traceback.format_exc(limit=6)}")


def _exit_with(parent_pid: int) -> None:
    """Leave as soon as the driver is gone (killed with -9, its node lost): an orphan must not go on training,
    holding a training lease and writing checkpoints nobody will read. The driver is not this process's parent (the
    fork server is), so its exit is watched through a pidfd (Linux 5.3+), else by polling its pid."""
    import os
    import select
    import threading

    from qtts_sweep.util.procs import pid_alive

    def watch() -> None:
        try:
            fd = os.pidfd_open(parent_pid)
        except ProcessLookupError:
            os._exit(3)
        except (AttributeError, OSError):  # no pidfd: poll once a second
            while pid_alive(parent_pid):
                time.sleep(1.0)
            os._exit(3)
        select.select([fd], [], [])  # readable once the driver has exited
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_main(
    conn: Any, threads: int | None = None, parent_pid: int | None = None, env: dict[str, str] | None = None
) -> None:
    """Serve trials until told to stop or the pipe closes.

    Args:
        threads: CPU threads for torch (each of several drivers on one CPU machine gets its share).
        parent_pid: the driver's pid; the worker exits when the driver does.
        env: the driver's environment when it started this worker (a forked worker has the fork server's, from
            when that started).
    """
    # Ctrl-C in a terminal and a scheduler's SIGTERM reach the whole process group: the driver handles them
    # (fails and re-queues the trial, then stops this worker); the worker must not die half-way through a write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import os

    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if parent_pid is not None:
        from qtts_sweep.train.loop import DRIVER_PID_ENV

        os.environ[DRIVER_PID_ENV] = str(parent_pid)  # for the fault-injection markers (train.loop.test_stall)
    quiet.setup()  # a new process inherits the environment's choice, not this logging/warnings set-up
    if parent_pid is not None:
        _exit_with(parent_pid)
    if threads:
        import torch

        torch.set_num_threads(threads)
    state = WorkerState()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        if msg[0] == "warm":  # load data and model while the driver opens its study
            try:
                state.run(msg[1].config)
            except Exception:  # noqa: S110 - the first trial meets (and reports) the same problem
                pass
            conn.send(("warmed", state.take_phases()))
            continue
        conn.send(_serve(msg, state, conn))
