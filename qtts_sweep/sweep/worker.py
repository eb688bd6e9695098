"""The sweep's trial worker: a separate process that keeps the base model loaded across trials.

The driver (sweep.py) sends one trial at a time over a pipe; the worker makes sure the checkpoint exists
(reuse / resume / train, reporting each epoch's validation loss back and obeying the pruner's answer), scores
the val lines at the trial's LoRA scale, and returns plain data. A segfault or out-of-memory kill takes only
this process down: the driver records the trial as failed and starts a new worker.

Messages (tuples over a `multiprocessing` Pipe):
  driver -> worker: ("warm", TrialRequest) | ("trial", TrialRequest) | ("prune", bool) | ("stop",)
  worker -> driver: ("warmed",) | ("epoch", epoch, metrics, reused, training_key) | ("done", dict) | ("pruned", epoch)
                    | ("failed", kind, message)
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass
from typing import Any

from qtts_sweep.config.schema import Config


@dataclass
class TrialRequest:
    number: int
    config: Config
    crash: str | None = None  # test hook: "segfault" | "raise" | "nan" (see _test_crash)
    base: bool = False  # score the base model (no adapter) on the same lines, for the listening page


class Pruned(Exception):
    pass


def _identity(cfg: Config) -> tuple:
    """Which loaded model a trial can run on: same base model settings and same LoRA layer layout."""
    return (dataclasses.astuple(cfg.model), dataclasses.astuple(cfg.lora))


class _State:
    """Loaded once per worker process and per (model, lora layout)."""

    def __init__(self) -> None:
        self.identity: tuple | None = None
        self.synth: Any = None
        self.suite: Any = None
        self.datasets: dict[tuple, Any] = {}
        self.model_ids: dict[str, str] = {}

    def model_id(self, cfg: Config) -> str:
        from qtts_sweep.model.modeling import ensure_model_folder
        from qtts_sweep.train.store import model_identity

        if cfg.model.source not in self.model_ids:
            self.model_ids[cfg.model.source] = model_identity(ensure_model_folder(cfg.model))
        return self.model_ids[cfg.model.source]

    def dataset(self, cfg: Config) -> Any:
        """The prepared dataset, checked once per worker (a sweep does not change its data under its own feet)."""
        from qtts_sweep.data.prepare import prepare_dataset

        key = (dataclasses.astuple(cfg.data), cfg.model.source, cfg.paths.data_dir, cfg.paths.runs_dir)
        if key not in self.datasets:
            self.datasets[key] = prepare_dataset(cfg, progress=False)
        return self.datasets[key]

    def ensure(self, cfg: Config) -> None:
        from qtts_sweep.evaluate.scoring import MetricSuite
        from qtts_sweep.evaluate.synth import Synthesizer

        ident = _identity(cfg)
        if ident != self.identity:
            self.synth = Synthesizer(cfg)
            self.suite = MetricSuite(cfg, self.synth)
            self.identity = ident
        else:
            self.synth.cfg = cfg
            self.suite.cfg = cfg


def _test_crash(kind: str | None) -> None:
    """Failure injection for tests of crash isolation (never set by a sweep file)."""
    if kind == "segfault":
        import ctypes

        ctypes.string_at(0)  # dereference NULL: the process dies with SIGSEGV
    if kind == "raise":
        raise RuntimeError("injected failure (test)")


def run_trial(req: TrialRequest, state: _State, conn: Any) -> dict[str, Any]:
    import time

    from qtts_sweep.evaluate.scoring import evaluate, held_out_lines
    from qtts_sweep.model import modeling
    from qtts_sweep.train.loop import TrainingDiverged, ensure_epoch, resolve_run

    cfg = req.config
    _test_crash(req.crash)
    t0 = time.perf_counter()
    run = resolve_run(cfg, state.dataset(cfg), state.model_id(cfg))
    state.ensure(cfg)
    synth = state.synth
    t_setup = time.perf_counter() - t0
    paused = 0.0  # time spent waiting for the driver's pruning answers (orchestration, not training)

    def on_epoch(epoch: int, metrics: dict[str, float], reused: bool) -> None:
        if req.crash == "nan" and not reused:
            metrics = {**metrics, "val_loss": float("nan")}
        nonlocal paused
        t = time.perf_counter()
        conn.send(("epoch", epoch, metrics, reused, run.key))
        msg = conn.recv()
        paused += time.perf_counter() - t
        if msg[0] == "prune" and msg[1]:
            raise Pruned(epoch)
        if req.crash == "nan" and not reused:
            raise TrainingDiverged(f"non-finite validation loss at epoch {epoch} (injected)")

    t1 = time.perf_counter()
    result = ensure_epoch(cfg, cfg.eval.epoch, on_epoch=on_epoch, run=run, progress=False, loaded=synth.loaded)
    t_train = time.perf_counter() - t1 - paused
    if result.trained:
        synth.checkpoint = None  # the model's adapter now holds freshly trained weights, not a loaded epoch
    ref_wav = modeling.load_audio_24k(run.dataset.ref_audio)
    lines = held_out_lines(run.dataset, cfg.eval.split, cfg.eval.max_lines)
    t2 = time.perf_counter()
    ev = evaluate(
        cfg, synth, state.suite, lines, ref_wav, run.key, cfg.eval.epoch, cfg.eval.lora_scale, result.checkpoint
    )
    t_eval = time.perf_counter() - t2
    return {
        "timings": {"setup_s": t_setup, "train_s": t_train, "eval_s": t_eval},
        "training_key": run.key,
        "training_dir": str(run.dir),
        "checkpoint": str(result.checkpoint),
        "trained": result.trained,
        "reused": result.reused,
        "epoch_metrics": {str(k): v for k, v in result.metrics.items()},
        "objective": ev.objective,
        "summary": ev.summary,
        "eval_dir": str(ev.dir),
        "eval_cached": ev.cached,
        "per_line": [{k: v for k, v in row.items() if k != "codes"} for row in ev.per_line],
        "backends": ev.backends,
        "dataset_hash": run.dataset.hash,
    }


def run_base(req: TrialRequest, state: _State) -> dict[str, Any]:
    """The base model on the val lines with the same speaker embedding and decoding (scale 0, no adapter)."""
    import time

    from qtts_sweep.evaluate.scoring import evaluate, held_out_lines
    from qtts_sweep.model import modeling
    from qtts_sweep.train.loop import resolve_run

    cfg = req.config
    run = resolve_run(cfg, state.dataset(cfg), state.model_id(cfg))
    state.ensure(cfg)
    ref_wav = modeling.load_audio_24k(run.dataset.ref_audio)
    state.synth.use(None, 0.0, modeling.speaker_embedding(state.synth.loaded, ref_wav))
    lines = held_out_lines(run.dataset, cfg.eval.split, cfg.eval.max_lines)
    t0 = time.perf_counter()
    ev = evaluate(cfg, state.synth, state.suite, lines, ref_wav, "base", None, 0.0, None)
    return {"eval_dir": str(ev.dir), "objective": ev.objective, "timings": {"eval_s": time.perf_counter() - t0}}


def worker_main(conn: Any) -> None:
    """Serve trials until told to stop or the pipe closes."""
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the driver handles it (fails and re-queues the
    # trial, then stops this worker); the worker must not die half-way through writing a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = _State()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        req: TrialRequest = msg[1]
        if msg[0] == "warm":  # load data and model while the driver opens its study
            try:
                state.dataset(req.config)
                state.ensure(req.config)
                conn.send(("warmed",))
            except Exception as exc:  # the first trial will meet (and report) the same problem
                conn.send(("warmed", str(exc)))
            continue
        try:
            conn.send(("done", run_base(req, state) if req.base else run_trial(req, state, conn)))
        except Pruned as exc:
            conn.send(("pruned", exc.args[0]))
        except Exception as exc:  # any failure is the trial's, reported with its kind; the worker lives on
            kind = type(exc).__name__
            if "out of memory" in str(exc).lower():
                kind = "OutOfMemory"
            conn.send(("failed", kind, f"{exc}\n{traceback.format_exc(limit=6)}"))
