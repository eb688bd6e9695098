"""LoRA training with per-epoch checkpoints in the content-addressed store, reusing and resuming what exists.

`ensure_epoch(cfg, e)` is the one entry point: if (training key, e) is stored it is reused; otherwise training
resumes from the latest stored earlier epoch of the same key (adapter, optimizer, scheduler and RNG state), or
starts from scratch. The LR schedule spans `train.max_epochs`, and each epoch's data order and dropout RNG are
seeded from (train.seed, epoch), so checkpoint e is the same whatever epoch a trial stops at, and resumed
training equals uninterrupted training bit for bit on CPU.

Not here: the loss (loss.py), the model layout (modeling.py), adapters (lora.py), the store (store.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.data.prepare import PreparedDataset, load_dataset
from qtts_sweep.data.rows import PreparedRow
from qtts_sweep.train.lease import TrainingLease
from qtts_sweep.train.store import (
    Checkpoint,
    CheckpointRef,
    CheckpointStore,
    CorruptEntry,
    TrainerState,
    key_material,
    model_identity,
    training_key,
)
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

EPOCH_SEED_STRIDE = 100_003  # seed of epoch e = train.seed * stride + e: independent, reproducible streams


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf: the trial is a failure, not a crash of the sweep."""


@dataclass
class TrainingRun:
    """What identifies a training run: its key, the material hashed into it, the data it reads."""

    key: str
    material: dict
    dataset: PreparedDataset
    store: CheckpointStore

    @property
    def dir(self) -> Path:
        return self.store.key_dir(self.key)


@dataclass
class TrainResult:
    ref: CheckpointRef  # the requested epoch, as code outside train/ names it
    trained: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # per epoch, reused ones included

    @property
    def key(self) -> str:
        return self.ref.key

    @property
    def checkpoint(self) -> Path:
        """The epoch-<e> folder of the requested epoch."""
        return self.ref.path


def resolve_run(cfg: Config, dataset: PreparedDataset | None = None, model_id: str | None = None) -> TrainingRun:
    """Prepare (cached) the data and compute the training key; loads no model.

    A sweep worker passes the dataset and model identity it already checked (they do not change mid-sweep).
    """
    from qtts_sweep.data.audio import sha256_file
    from qtts_sweep.model.modeling import ensure_model_folder

    ds = dataset or load_dataset(cfg, progress=True)
    model_id = model_id or model_identity(ensure_model_folder(cfg.model))
    material = key_material(cfg, ds.hash, sha256_file(ds.ref_audio), model_id)
    store = CheckpointStore(cfg.paths.store_dir)
    key = training_key(material)
    return TrainingRun(key=key, material=material, dataset=ds, store=store)


def epoch_metrics(run: TrainingRun, epoch: int) -> dict[str, float]:
    return run.store.load_metrics(run.key, epoch)


def report_corrupt(exc: CorruptEntry) -> None:
    """One line per corrupt epoch: which file, where its folder went, and what (if anything) to do."""
    where = f" and its folder moved aside to {exc.moved_to}" if exc.moved_to else ""
    log.warning(
        f"corrupt checkpoint {exc.path}: {exc.reason}. It is treated as missing{where}, and recomputed. "
        "Fix: nothing needed for this run; delete the moved-aside folder once inspected, and if others can write "
        "into the store, restrict it (chmod -R o-w <store>)"
    )


def _examples(loaded: Any, rows: list[PreparedRow], spk: Any) -> list[Any]:
    import torch

    from qtts_sweep.model.loss import Example
    from qtts_sweep.model.modeling import tokenize_line

    out = []
    for row in rows:
        role, text_ids = tokenize_line(loaded.tts, row.text)
        out.append(Example(role, text_ids, torch.tensor(row.audio_codes, dtype=torch.long), spk))
    return out


def _batches(n: int, batch_size: int, generator: Any) -> list[list[int]]:
    import torch

    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def steps_per_epoch(cfg: Config, n_train: int) -> tuple[int, int]:
    """(micro-batches, optimizer steps) per epoch."""
    micro = math.ceil(n_train / cfg.train.batch_size)
    if cfg.train.max_steps_per_epoch is not None:
        micro = min(micro, cfg.train.max_steps_per_epoch * cfg.train.grad_accum)
    return micro, math.ceil(micro / cfg.train.grad_accum)


def validation_loss(model: Any, examples: list[Any], cfg: Config) -> dict[str, float]:
    """Teacher-forced loss and accuracies on held-out lines (empty set -> empty dict, one line is fine)."""
    import torch

    from qtts_sweep.model.loss import compute_loss

    if not examples:
        return {}
    model.eval()
    totals = {
        "val_loss": 0.0,
        "val_talker_loss": 0.0,
        "val_subtalker_loss": 0.0,
        "val_talker_acc": 0.0,
        "val_subtalker_acc": 0.0,
    }
    with torch.no_grad():
        for i in range(0, len(examples), cfg.train.batch_size):
            batch = examples[i : i + cfg.train.batch_size]
            out = compute_loss(model, batch, cfg.train.subtalker_loss_weight)
            w = len(batch) / len(examples)
            totals["val_loss"] += w * out.loss.item()
            totals["val_talker_loss"] += w * out.talker_loss.item()
            totals["val_subtalker_loss"] += w * out.subtalker_loss.item()
            totals["val_talker_acc"] += w * out.talker_acc
            totals["val_subtalker_acc"] += w * out.subtalker_acc
    return totals


DRIVER_PID_ENV = "QTTS_DRIVER_PID"  # set in a trial worker: its driver's pid (the worker's parent is a fork server)
STALL_ENV = "QTTS_TEST_STALL"  # test hook "<dir>:<seconds>": pause mid-epoch and mid-save so a test can kill -9


def test_stall(phase: str) -> None:
    """Fault-injection hook for the scale-out tests (never set in normal use): write a marker
    `<phase>-<worker pid>-<driver pid>`, pause, remove it. Only while the folder exists: a test arms the stalls by
    creating it and disarms them (once its kills are done) by removing it."""
    value = os.environ.get(STALL_ENV)
    if not value:
        return
    folder, seconds = value.rsplit(":", 1)
    driver = os.environ.get(DRIVER_PID_ENV, str(os.getppid()))
    marker = Path(folder) / f"{phase}-{os.getpid()}-{driver}"
    try:
        marker.write_text("")
    except FileNotFoundError:  # not armed
        return
    time.sleep(float(seconds))
    marker.unlink(missing_ok=True)


def _save_epoch(
    run: TrainingRun,
    epoch: int,
    model: Any,
    spk: Any,
    opt: Any,
    sched: Any,
    metrics: dict,
    config_yaml: str,
    lease: TrainingLease | None = None,
) -> Path:
    import torch

    from qtts_sweep.model.lora import adapter_state_dict

    checkpoint = Checkpoint(
        adapter=adapter_state_dict(model),
        speaker_embedding=spk,
        metrics=metrics,
        config_yaml=config_yaml,
        trainer_state=TrainerState(opt.state_dict(), sched.state_dict(), torch.get_rng_state(), epoch),
    )

    def before_commit() -> None:
        test_stall("save")
        if lease is not None:
            lease.check()  # never rename an epoch into place after losing the key to another worker

    return run.store.save_epoch(run.key, epoch, checkpoint, before_commit=before_commit)


def _usable_start(run: TrainingRun, epoch: int) -> tuple[int, Checkpoint | None]:
    """The latest stored epoch <= `epoch` whose files pass their checks, and (when training must go on from it)
    its checkpoint with trainer state. A corrupt one is moved aside by the store and the next earlier is tried."""
    while True:
        start = run.store.latest_at_most(run.key, epoch) or 0
        try:
            if start == 0:
                return 0, None
            if start == epoch:
                run.store.verify(run.key, epoch)
                return start, None
            return start, run.store.load_epoch(run.key, start)
        except CorruptEntry as exc:
            report_corrupt(exc)


def ensure_epoch(
    cfg: Config,
    epoch: int,
    on_epoch: Callable[[int, dict[str, float], bool], None] | None = None,
    run: TrainingRun | None = None,
    progress: bool = True,
    loaded: Any | None = None,
) -> TrainResult:
    """Make sure checkpoint (key, epoch) exists: reuse it, resume up to it, or train from scratch.

    Args:
        on_epoch: called as on_epoch(e, metrics, reused) for every epoch 1..epoch in order (reused ones too),
            e.g. to report intermediate values to a pruner; it may raise to stop training (epochs already
            saved stay reusable).
        loaded: an already loaded base model with LoRA layers of this config injected (a sweep worker's);
            its adapter is re-initialised, trained, and left holding the last trained epoch.
    """
    if not 1 <= epoch <= cfg.train.max_epochs:
        raise ValueError(f"epoch {epoch} is outside 1..train.max_epochs={cfg.train.max_epochs}")
    run = run or resolve_run(cfg)
    run.store.write_material(run.key, run.material)
    result = TrainResult(run.store.ref(run.key, epoch))
    lease = TrainingLease(run.dir)  # one object: it accumulates its observation of another holder's marker
    while True:
        start, resume = _usable_start(run, epoch)
        _report_reused(run, start, result, on_epoch)
        if start == epoch:
            return result
        if lease.try_acquire():
            try:
                start, resume = _usable_start(run, epoch)  # another worker may have saved more meanwhile
                _report_reused(run, start, result, on_epoch)
                if start < epoch:
                    _train_epochs(cfg, run, resume, start, epoch, result, on_epoch, progress, loaded, lease)
            finally:
                lease.release()
            return result
        _wait_for_holder(run, epoch, start, lease)


def _report_reused(run: TrainingRun, start: int, result: TrainResult, on_epoch: Callable | None) -> None:
    """Report stored epochs 1..start not reported yet, in order (the pruner sees every epoch once)."""
    stored = run.store.epochs(run.key)
    for e in range(1, start + 1):
        if e in result.metrics or e not in stored:
            continue
        try:
            m = epoch_metrics(run, e)
        except CorruptEntry as exc:  # an earlier epoch: nothing depends on it now, its metrics are lost
            report_corrupt(exc)
            continue
        result.metrics[e] = m
        result.reused.append(e)
        if on_epoch:
            on_epoch(e, m, True)


def _wait_for_holder(run: TrainingRun, epoch: int, start: int, lease: TrainingLease) -> None:
    """Another worker trains this key: wait until it saves a further epoch (reused next) or its lease is released
    or expires (then this worker resumes from the last complete epoch)."""
    while True:
        time.sleep(0.5)
        if (run.store.latest_at_most(run.key, epoch) or 0) > start:
            return
        if lease.vacant():
            return


# The training loop: long (~85 lines) on purpose, the usual exception; the loss, checkpoint writing, the lease
# and the data live elsewhere, and what is left reads top to bottom as one epoch.
def _train_epochs(
    cfg: Config,
    run: TrainingRun,
    resume: Checkpoint | None,
    start: int,
    stop: int,
    result: TrainResult,
    on_epoch: Callable | None,
    progress: bool,
    loaded: Any | None,
    lease: TrainingLease | None = None,
) -> None:
    import torch
    from transformers import get_scheduler

    from qtts_sweep.config.loader import to_yaml
    from qtts_sweep.model import modeling
    from qtts_sweep.model.lora import apply_lora, load_adapter_state, reset_lora
    from qtts_sweep.model.loss import compute_loss

    fresh = loaded is None
    loaded = loaded or modeling.load_model(cfg.model)
    model = loaded.model
    model.eval()
    if resume is not None:
        spk = resume.speaker_embedding.to(loaded.device)
    else:
        # Computed once, deliberately, from the reference clip (upstream took it from the first shuffled batch).
        spk = modeling.speaker_embedding(loaded, modeling.load_audio_24k(run.dataset.ref_audio))
    if fresh:
        apply_lora(model, cfg.lora, seed=cfg.train.seed)
    else:
        reset_lora(model, seed=cfg.train.seed)
    train_ex = _examples(loaded, run.dataset.splits["train"], spk)
    val_ex = _examples(loaded, run.dataset.splits["val"], spk)
    if not train_ex:
        raise ValueError(f"dataset {run.dataset.dir} has no training lines")
    micro, opt_steps = steps_per_epoch(cfg, len(train_ex))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total = opt_steps * cfg.train.max_epochs
    sched = get_scheduler(
        cfg.train.scheduler, opt, num_warmup_steps=int(cfg.train.warmup_ratio * total), num_training_steps=total
    )
    if resume is not None:
        load_adapter_state(model, resume.adapter)
        opt.load_state_dict(resume.trainer_state.optimizer)
        sched.load_state_dict(resume.trainer_state.scheduler)
    config_yaml = to_yaml(cfg)  # every epoch's config.yaml (credentials in URLs masked); once: ~0.1 s a call
    for e in range(start + 1, stop + 1):
        run.store.log_training(run.key, e, "start")
        seed = cfg.train.seed * EPOCH_SEED_STRIDE + e
        torch.manual_seed(seed)  # dropout stream of this epoch
        batches = _batches(len(train_ex), cfg.train.batch_size, torch.Generator().manual_seed(seed))[:micro]
        model.train()
        losses = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {e}/{cfg.train.max_epochs}", unit="batch", leave=False)
        opt.zero_grad(set_to_none=True)
        for i, idx in enumerate(batches):
            out = compute_loss(model, [train_ex[j] for j in idx], cfg.train.subtalker_loss_weight)
            if not torch.isfinite(out.loss):
                raise TrainingDiverged(f"non-finite loss {out.loss.item()} at epoch {e}, batch {i + 1}")
            (out.loss / cfg.train.grad_accum).backward()
            losses.append(out.loss.item())
            if (i + 1) % cfg.train.grad_accum == 0 or i + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            if i == 0:
                test_stall("epoch")
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss.item():.3f}")
        if bar:
            bar.close()
        metrics = {"train_loss": sum(losses) / len(losses), "lr": sched.get_last_lr()[0]}
        metrics.update(validation_loss(model, val_ex, cfg))
        if not math.isfinite(metrics.get("val_loss", 0.0)):
            raise TrainingDiverged(f"non-finite validation loss at epoch {e}")
        _save_epoch(run, e, model, spk, opt, sched, metrics, config_yaml, lease)
        run.store.log_training(run.key, e, "saved")
        result.trained.append(e)
        result.metrics[e] = metrics
        if on_epoch:
            on_epoch(e, metrics, False)


def format_result(result: TrainResult, run: TrainingRun) -> str:
    lines = [f"training key {result.key}  ({run.dir})"]
    if not result.trained:
        lines.append(f"nothing to train: epochs {result.reused} already stored, reused")
    else:
        if result.reused:
            lines.append(f"reused epochs {result.reused}; trained epochs {result.trained}")
        else:
            lines.append(f"trained epochs {result.trained} from scratch")
    for e, m in sorted(result.metrics.items()):
        val = f", val_loss {m['val_loss']:.4f}" if "val_loss" in m else ""
        lines.append(f"  epoch {e}: train_loss {m['train_loss']:.4f}{val}  -> {run.store.epoch_dir(result.key, e)}")
    lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)
