"""A simulated sweep for `qtts-sweep bench search`: one landscape, one cost model, four search strategies run with
Optuna's real samplers and pruners on in-memory studies. No model, no files: a trial's per-line scores are drawn
from a synthetic landscape and its cost is counted.

The cost model (the dry run's measured figures, docs/real-size.md, 1.7B on CPU):

    training   36.36 s per optimizer step (batch 1) x STEPS_PER_EPOCH steps per epoch (a voice of that many lines)
    synthesis  117.96 s per synthesized second x LINE_S s per line (codec decode included)

The landscape is shaped like the seed write-up's findings: the mean composite score q(lr, epoch, scale) peaks
near lr 2e-6, epoch ~10, scale ~0.32; the best scale and epoch fall as lr rises, and high lr with high scale
collapses. A line's score is q + the line's difficulty (shared by every pair: what makes a paired test strong)
+ per-(pair, line) noise, deterministic per (seed, pair, line): the same pair scored twice gives the same line
scores, like the evaluation cache. The noise spread LINE_SD is that of docs/metrics.md's per-line composite (the
thinnest per-line margins between clean speech and a failure were 0.04-0.05). "Within noise of the best": the
promoted pair's true q is at most NOISE below the best q in the space, NOISE being the 95% half-width of a paired
difference of two pairs' means over all lines (2 x LINE_SD x sqrt(2 / N_LINES)).

Strategies (same landscape, same seed):
    (a) grid: 3 lr x 10 epochs x 8 scales (the issue's grid; the seed's had 2 x 5 x 5), every pair on every line,
        checkpoints reused (each lr trained once).
    (b) retrain-per-trial TPE (what hydra-optuna-sweeper does): each trial trains from scratch to its epoch,
        every line; no enqueued defaults.
    (c) ours, full lines: TPE over lr (log grid) x epoch x continuous scale, the published defaults enqueued,
        training reused per lr (a trial trains only epochs not trained before), every line.
    (d) ours, multi-fidelity + warm start: (c) with lines in chunks (first MIN_LINES, then STEP more) pruned by
        Optuna's WilcoxonPruner (the sweep's own `fidelity.make_pruner` and `chunk_ends`), per-line results
        cached, and the top WARM_K points of an earlier study on a shifted landscape (another voice: best scale
        0.42, epoch 8) enqueued after the defaults. The earlier study's own cost belongs to that voice.
The promoted pair is the best COMPLETE trial (a pruned one never).

Lives in qtts_sweep.sweep because it drives Optuna studies (the package's rule: only sweep/ does). Owns the
simulation; the printout and the real tiny-preset comparison are qtts_sweep.tools.bench_search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TRAIN_S_PER_STEP = 36.36  # dry run, 1.7B, CPU, batch 1 (docs/real-size.md)
STEPS_PER_EPOCH = 50  # assumed: a voice of 50 training lines at batch 1
SYNTH_S_PER_AUDIO_S = 117.96  # dry run, 1.7B, CPU, greedy, codec decode included
LINE_S = 3.0  # assumed mean held-out line length (the demo data's lines are 1-4 s)
EPOCH_S = TRAIN_S_PER_STEP * STEPS_PER_EPOCH
LINE_COST_S = SYNTH_S_PER_AUDIO_S * LINE_S
N_LINES = 50
LINE_SD = 0.05  # per-(pair, line) noise of the composite
DIFFICULTY_SD = 0.08  # per-line difficulty, shared by every pair
NOISE = 2 * LINE_SD * math.sqrt(2 / N_LINES)
N_TRIALS = 40
MIN_LINES, STEP, P_THRESHOLD = 10, 10, 0.1  # (d): what sweeps/default.yaml ships
WARM_K = 3
OURS_LRS = (1e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5)  # sweeps/default.yaml's log grid
GRID = {"lr": (1e-6, 2e-6, 5e-6), "epoch": tuple(range(1, 11)), "scale": (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0)}
SCALE_RANGE = (0.1, 1.0)
DEFAULTS = ({"lr": 2e-6, "epoch": 10, "scale": 0.3}, {"lr": 2e-5, "epoch": 10, "scale": 1.0})


@dataclass(frozen=True)
class Landscape:
    """The mean composite score over lr x epoch x scale, and per-line draws of it."""

    seed: int
    lr_best: float = 2e-6
    epoch_best: float = 10.0
    scale_best: float = 0.32

    def q(self, lr: float, epoch: int, scale: float) -> float:
        a = math.log10(lr / self.lr_best)  # decades from the best lr
        ep_opt = min(10.0, self.epoch_best * 10 ** (-0.3 * a))  # a higher lr peaks earlier
        sc_opt = self.scale_best * 10 ** (-0.5 * a)  # and wants a smaller scale
        score = 0.80 - 0.10 * a * a - 0.12 * ((epoch - ep_opt) / 5) ** 2 - 0.9 * (scale - sc_opt) ** 2
        collapse = 0.45 / (1 + math.exp(-8 * (a + 1.2 * (scale - 0.6))))  # high lr x high scale
        return score - collapse

    def difficulty(self) -> Any:
        import numpy as np

        return np.random.default_rng([self.seed, 7]).normal(0.0, DIFFICULTY_SD, N_LINES)

    def lines(self, lr: float, epoch: int, scale: float) -> Any:
        """The pair's N_LINES line scores (deterministic per seed and pair)."""
        import numpy as np

        key = [self.seed, int(round(math.log10(lr) * 1000)) + 100000, int(epoch), int(round(scale * 1e6))]
        noise = np.random.default_rng(key).normal(0.0, LINE_SD, N_LINES)
        return self.q(lr, epoch, scale) + self.difficulty() + noise

    def best(self) -> float:
        """The best q over the searchable space (ours: lr grid x epochs x scale on a 0.005 grid)."""
        scales = [SCALE_RANGE[0] + 0.005 * i for i in range(int((SCALE_RANGE[1] - SCALE_RANGE[0]) / 0.005) + 1)]
        return max(self.q(lr, e, s) for lr in set(OURS_LRS) | set(GRID["lr"]) for e in GRID["epoch"] for s in scales)


@dataclass
class Run:
    """What one strategy spent on one seed, and how good its promoted pair truly is."""

    train_s: float = 0.0
    synth_s: float = 0.0
    lines: int = 0
    trials: int = 0
    pruned: int = 0
    promoted_q: float = float("nan")
    trained: dict = field(default_factory=dict)  # lr -> highest epoch trained (reuse)
    scored: dict = field(default_factory=dict)  # pair -> lines synthesized so far (the per-line cache)

    @property
    def cost(self) -> float:
        return self.train_s + self.synth_s

    def train(self, lr: float, epoch: int, reuse: bool) -> None:
        if not reuse:
            self.train_s += epoch * EPOCH_S
            return
        done = self.trained.get(lr, 0)
        self.train_s += max(0, epoch - done) * EPOCH_S
        self.trained[lr] = max(done, epoch)

    def synth(self, pair: tuple, n: int) -> None:
        """Score the first n lines of `pair`: only lines not scored before cost anything."""
        have = self.scored.get(pair, 0)
        if n > have:
            self.lines += n - have
            self.synth_s += (n - have) * LINE_COST_S
            self.scored[pair] = n


def _suggest(trial, continuous: bool) -> tuple[float, int, float]:
    lr = trial.suggest_categorical("lr", list(OURS_LRS))
    epoch = trial.suggest_int("epoch", 1, 10)
    scale = trial.suggest_float("scale", *SCALE_RANGE) if continuous else trial.suggest_categorical("scale", [])
    return lr, epoch, scale


def _study(seed: int, sampler: str = "tpe", pruner: Any = None):
    import optuna

    if sampler == "grid":
        s = optuna.samplers.GridSampler({k: list(v) for k, v in GRID.items()}, seed=seed)
    else:
        s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    return optuna.create_study(direction="maximize", sampler=s, pruner=pruner)


def _promote(study, land: Landscape, run: Run) -> Run:
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = max(done, key=lambda t: (t.value, -t.number))
    run.promoted_q = land.q(best.params["lr"], best.params["epoch"], best.params["scale"])
    run.trials = len(study.trials)
    run.pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    return run


def run_grid(land: Landscape, seed: int) -> Run:
    """(a) every grid pair on every line, each lr trained once to its highest epoch."""
    study, run = _study(seed, "grid"), Run()
    n = math.prod(len(v) for v in GRID.values())
    for _ in range(n):
        trial = study.ask()
        lr = trial.suggest_categorical("lr", list(GRID["lr"]))
        epoch = trial.suggest_categorical("epoch", list(GRID["epoch"]))
        scale = trial.suggest_categorical("scale", list(GRID["scale"]))
        run.train(lr, epoch, reuse=True)
        run.synth((lr, epoch, scale), N_LINES)
        try:
            study.tell(trial, float(land.lines(lr, epoch, scale).mean()))
        except RuntimeError as exc:  # GridSampler stops the study after the last point (outside optimize())
            if "Study.stop" not in str(exc):
                raise
    return _promote(study, land, run)


def run_tpe(land: Landscape, seed: int, reuse: bool, fidelity: bool, enqueue: list[dict]) -> Run:
    """(b), (c), (d): TPE with or without training reuse, full lines or Wilcoxon-pruned chunks."""
    import optuna

    from qtts_sweep.sweep.fidelity import Fidelity, chunk_ends, make_pruner

    fid = Fidelity(MIN_LINES, STEP)
    pruner = make_pruner({"p_threshold": P_THRESHOLD}, fid) if fidelity else optuna.pruners.NopPruner()
    study, run = _study(seed, pruner=pruner), Run()
    for point in enqueue:
        study.enqueue_trial(point, skip_if_exists=True)
    for _ in range(N_TRIALS):
        trial = study.ask()
        lr, epoch, scale = _suggest(trial, continuous=True)
        run.train(lr, epoch, reuse)
        pair = (lr, epoch, round(scale, 6))
        values = land.lines(lr, epoch, scale)
        if not fidelity:
            run.synth(pair, N_LINES)
            study.tell(trial, float(values.mean()))
            continue
        sent, pruned = 0, False
        for n in chunk_ends(N_LINES, fid, 1):
            run.synth(pair, n)
            for i in range(sent, n):
                trial.report(float(values[i]), i)
            sent = n
            if n < N_LINES and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, float(values.mean()))
    return _promote(study, land, run)


def warm_points(seed: int) -> list[dict]:
    """The top WARM_K points of an earlier study (another voice: a shifted landscape, its own line draws)."""
    from optuna.trial import TrialState

    other = Landscape(seed + 10_000, epoch_best=8.0, scale_best=0.42)
    study = _earlier_study(other, seed + 10_000)
    done = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    return [dict(t.params) for t in done[:WARM_K]]


def _earlier_study(land: Landscape, seed: int):
    """The earlier voice's sweep ((d) without warm start); its cost belongs to that voice, not to this one."""
    import optuna

    from qtts_sweep.sweep.fidelity import Fidelity, chunk_ends, make_pruner

    fid = Fidelity(MIN_LINES, STEP)
    study = _study(seed, pruner=make_pruner({"p_threshold": P_THRESHOLD}, fid))
    for point in DEFAULTS:
        study.enqueue_trial(point)
    for _ in range(N_TRIALS):
        trial = study.ask()
        lr, epoch, scale = _suggest(trial, continuous=True)
        values = land.lines(lr, epoch, scale)
        sent, state = 0, None
        for n in chunk_ends(N_LINES, fid, 1):
            for i in range(sent, n):
                trial.report(float(values[i]), i)
            sent = n
            if n < N_LINES and trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, None if state else float(values.mean()), state=state)
    return study


STRATEGIES = {
    "a": "grid 3x10x8, every line",
    "b": "retrain-per-trial TPE, every line",
    "c": "ours (reuse), every line",
    "d": "ours, multi-fidelity + warm start",
}


def simulate(seeds: int = 20, first_seed: int = 0) -> dict[str, list[tuple[Run, float]]]:
    """{strategy: [(its run, the true best q) per seed]}."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, list[tuple[Run, float]]] = {k: [] for k in STRATEGIES}
    for seed in range(first_seed, first_seed + seeds):
        land = Landscape(seed)
        best = land.best()
        out["a"].append((run_grid(land, seed), best))
        out["b"].append((run_tpe(land, seed, reuse=False, fidelity=False, enqueue=[]), best))
        out["c"].append((run_tpe(land, seed, reuse=True, fidelity=False, enqueue=list(DEFAULTS)), best))
        warm = [*DEFAULTS, *warm_points(seed)]
        out["d"].append((run_tpe(land, seed, reuse=True, fidelity=True, enqueue=warm), best))
    return out
