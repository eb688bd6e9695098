"""Imported once by the worker fork server (sweep/protocol.py `worker_context`), before it forks any worker.

Every trial worker needs torch, transformers, qwen-tts, peft and the metric libraries: ~9 s of imports on a CPU
core. Not MLflow, Optuna or Hydra: the driver does all logging and storage, and a worker that ran trials has none
of them in `sys.modules` (checked with a spawned worker); preloading MLflow cost every server start ~1 s for
nothing. A spawned worker paid these imports at every start (a restart after a crash, and each driver a test
process or notebook runs); a worker forked from a server that imported them once starts in a fraction of a second.
What is imported here is only imported, never run: no model, no thread pool, no CUDA context (a fork after CUDA
initialisation is unusable; torch's device count is asked through NVML here, which leaves CUDA alone, should an
import ask), so the forked worker is the same as a spawned one that has done its imports. Should a GPU worker
ever fail with "Cannot re-initialize CUDA in forked subprocess", `QTTS_WORKER_START=spawn` starts every worker as
a fresh interpreter again (sweep/protocol.py).

The fork server also ignores SIGTERM: a scheduler's stop (SLURM's scancel, Ctrl-C's SIGINT, which multiprocessing
already ignores there) reaches the whole process group, and the server must outlive it until the driver has
stopped its worker (the driver's handle learns a worker's exit through the server). It exits on its own when the
driver does (multiprocessing closes its pipe).

Owns: the list of modules a worker imports ahead of time. Does not own: starting the server or the workers
(sweep/protocol.py).
"""

from __future__ import annotations

import importlib
import os
import signal

from qtts_sweep.util import quiet
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

# Heavy third-party modules first (each imports the rest of its stack), then the project's modules a trial runs.
MODULES = (
    "torch",
    "transformers",
    "qwen_tts",
    "peft",
    "peft.tuners.lora",
    "soundfile",
    "librosa",
    "pyworld",
    "pysptk",
    "resemblyzer",
    "onnxruntime",
    "speechmos.dnsmos",
    "qtts_sweep.sweep.worker",
    "qtts_sweep.train.loop",
    "qtts_sweep.train.store",
    "qtts_sweep.train.lease",
    "qtts_sweep.model.modeling",
    "qtts_sweep.model.lora",
    "qtts_sweep.model.loss",
    "qtts_sweep.data.prepare",
    "qtts_sweep.evaluate.scoring",
    "qtts_sweep.evaluate.suite",
    "qtts_sweep.evaluate.synth",
    "qtts_sweep.metrics.audio",
    "qtts_sweep.metrics.speaker",
    "qtts_sweep.metrics.mos",
)


def _preload() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # the server's own; each worker gets the driver's
    quiet.setup()  # banners printed at import stay silenced as in a worker (QTTS_VERBOSE decides, as there)
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a worker imports it again and reports the failure as its trial's
            log.debug("preload: %s not imported: %s", name, exc)


_preload()
