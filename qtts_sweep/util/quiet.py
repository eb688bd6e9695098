"""Quiet by default: library warnings, INFO logs, download bars and import-time banners stay out of normal output;
`-v` / `--verbose` shows everything.

The choice travels in the environment (`QTTS_VERBOSE=1`), so trial workers and `sweep --join` driver processes,
which inherit neither `logging` nor `warnings` configuration, make the same choice when they call `setup()` at
start (a worker forked from a fork server that set up quiet and gets `-v` undoes it there). Where a silenced
message matters, the project says it in one line of its own (`note`), once per process: sox missing only when the
25 Hz tokenizer's speaker extractor (the one qwen-tts user of sox) is built; flash-attn missing only when
attention on a GPU falls back to SDPA (model/modeling.py).

Owns: the verbose switch, which library channels are silenced and how (environment variables the libraries read,
logger levels, warning filters, a redirect of stdout/stderr around the imports that print banners). Does not own:
the project's own output, or progress display (sweep/progress.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from qtts_sweep.util.log import get_logger
from qtts_sweep.util.log import set_verbose as set_log_verbose

log = get_logger(__name__)

VERBOSE_ENV = "QTTS_VERBOSE"

# Read by the libraries themselves when they first configure their logging (so also in child processes).
LIBRARY_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # "Setting `pad_token_id` to `eos_token_id`" on every generate()
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # download/"Fetching files" bars in every worker
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables", alembic migrations
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "🏃 View run ... at: http://..." per run (HTTP URIs)
}
# Loggers that talk at INFO/WARNING about their own business; ERROR still shows.
LIBRARY_LOGGERS = (
    "alembic",
    "filelock",
    "httpx",
    "huggingface_hub",
    "matplotlib",
    "mlflow",
    "numba",
    "peft",
    "sox",
    "torio",
    "transformers",
    "urllib3",
)

SOX_NOTE = "sox not installed: qwen-tts audio helpers unavailable; fix: apt-get install sox"
FLASH_ATTN_NOTE = "flash-attn not installed: using SDPA (pip install flash-attn for faster attention on GPU)"

_noted: set[str] = set()
_DEFAULT_WARNING_FILTERS = list(warnings.filters)  # as the interpreter set them, before any set-up here
_sox_missing = False


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(flag: bool) -> None:
    """Record the choice where child processes read it."""
    if flag:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def note(message: str) -> None:
    """One line of ours in place of a silenced library message, once per process (always printed: it matters)."""
    if message in _noted:
        return
    _noted.add(message)
    log.info(message)


def setup() -> None:
    """Silence library chatter for this process (and children that inherit its environment), unless verbose."""
    set_log_verbose(verbose())
    if verbose():  # undo a quiet set-up this process inherited (a worker forked from a server that started quiet)
        warnings.filters[:] = _DEFAULT_WARNING_FILTERS
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietImports)]
        return
    for key, value in LIBRARY_ENV.items():
        os.environ.setdefault(key, value)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Library warnings (Optuna's ExperimentalWarning and FutureWarning, "Heartbeat of storage is supposed to be
    # used with Study.optimize", matplotlib, torch) are advice to library callers, not to a sweep's user; the
    # project's own messages are printed lines, never warnings.
    warnings.simplefilter("ignore")
    if not any(isinstance(f, _QuietImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImports(IMPORT_HOOKS))


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Send this process's stdout and stderr to nowhere, at the file-descriptor level too: banners come from
    `print` and from shell children (`sox -h` via os.popen writes "/bin/sh: 1: sox: not found" to fd 2)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    with tempfile.TemporaryFile() as sink, contextlib.ExitStack() as stack:
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:  # no real descriptors (embedded interpreters): the Python-level redirect below still holds
            pass
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        try:
            yield
        finally:
            stack.close()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def _after_sox(module: ModuleType) -> None:
    global _sox_missing
    _sox_missing = bool(getattr(module, "NO_SOX", False))


def _after_speech_vq(module: ModuleType) -> None:
    """The 25 Hz tokenizer's x-vector extractor is qwen-tts's one user of sox: say it is missing when one is built."""
    cls = getattr(module, "XVectorExtractor", None)
    if cls is None or not _sox_missing:
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):  # noqa: N807 - replaces the class's own __init__
        note(SOX_NOTE)
        init(self, *args, **kwargs)

    cls.__init__ = __init__


def _after_optuna(module: ModuleType) -> None:
    module.logging.set_verbosity(module.logging.WARNING)  # Optuna resets its logger to INFO when first configured


# module -> what to do once it is imported; each is imported with stdout/stderr silenced.
IMPORT_HOOKS: dict[str, Callable[[ModuleType], None] | None] = {
    "sox": _after_sox,  # "SoX could not be found!" + the shell's "sox: not found", at import
    "qwen_tts.core.tokenizer_25hz.vq.speech_vq": _after_speech_vq,
    "qwen_tts.core.tokenizer_25hz.vq.whisper_encoder": None,  # "Warning: flash-attn is not installed" banner
    "optuna": _after_optuna,
}


class _QuietImports:  # a sys.meta_path finder (importlib.abc would cost --help 0.2 s)
    """Finds the listed modules through the other finders and wraps their loaders (see `_QuietLoader`)."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None] | None]) -> None:
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        if name not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self.hooks[name])
                return spec
        return None


class _QuietLoader:
    """Executes a module with its output silenced, then runs the follow-up; everything else is the real loader's."""

    def __init__(self, inner: Any, after: Callable[[ModuleType], None] | None) -> None:
        self._inner = inner
        self._after = after

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with silenced_output():
            self._inner.exec_module(module)
        if self._after is not None:
            self._after(module)

    def __getattr__(self, name: str):  # get_source, get_filename, is_package, resource readers
        return getattr(self._inner, name)
