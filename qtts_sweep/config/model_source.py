"""Checks that `model.source` can be loaded, before anything heavy: a local folder's files, or the local hub cache.

`model_source_problems(model)` answers from the file system only — never a network call — so `qtts-sweep check`
(and every command, through `load_config`) names a missing folder, an incomplete folder, or a hub id that is not
cached while the hub is offline, with the path and the fix, instead of a huggingface_hub traceback at load time.
`hub_error_message(exc)` phrases the same fixes for a load that still fails (a hub that cannot be
reached without being switched off). Not here: loading (qtts_sweep.model.modeling) and the tiny preset's
folder, which is created on first use and so is never checked.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from qtts_sweep.util.problems import Problem

# What `Qwen3TTSModel.from_pretrained` reads from a Base model folder (or hub repo): the talker config, the
# 12 Hz codec in its own sub-folder, and safetensors weights (one file, or shards listed in an index).
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "speech_tokenizer"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether the hub is switched off for this process (read now: tests and load_model set it at run time)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_hub_id(source: str) -> bool:
    """A valid `namespace/name` repo id that is not an existing local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(source).expanduser().exists() or source.startswith(("/", "./", "../", "~")):
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return "/" in source


def folder_missing_files(folder: Path) -> list[str]:
    """The expected files a local model folder lacks (empty when it looks loadable)."""
    missing = []
    if not (folder / CONFIG_FILE).is_file():
        missing.append(CONFIG_FILE)
    if not (folder / TOKENIZER_DIR / CONFIG_FILE).is_file():
        missing.append(f"{TOKENIZER_DIR}/{CONFIG_FILE} (the speech tokenizer folder)")
    if not any((folder / w).is_file() for w in WEIGHT_FILES) and not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    return missing


def hub_missing_files(repo_id: str) -> list[str]:
    """The expected files of `repo_id` that are not in the local hub cache (a lookup on disk only)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    missing = [n for n in (CONFIG_FILE, f"{TOKENIZER_DIR}/{CONFIG_FILE}") if not cached(n)]
    if not any(cached(w) for w in WEIGHT_FILES):
        missing.append("model.safetensors weights")
    return missing


def hub_fixes(repo_id: str) -> str:
    return (
        f"download it where the hub is reachable: `hf download {repo_id}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}`), then copy the cache; or point at a local copy: "
        "model.source=/local/folder model.local_files_only=true"
    )


def model_source_problems(model: Any, key: str = "model.source") -> list[Problem]:
    """Every reason `model.source` (and `model.attn_implementation`) cannot load here; [] when it looks fine."""
    out = attn_problems(model)
    if model.tiny or not str(model.source).strip():
        return out  # the tiny folder is made on first use; an empty source is a schema problem already
    source = str(model.source)
    if is_hub_id(source):
        offline = hub_offline() or model.local_files_only
        missing = hub_missing_files(source) if offline else []
        if missing:
            why = "HF_HUB_OFFLINE=1" if hub_offline() else "model.local_files_only=true"
            partly = "" if len(missing) == 3 else f"; only partly: missing {', '.join(missing)}"
            out.append(
                Problem(
                    key,
                    source,
                    f"is a hub id that is not in the local Hugging Face cache ({hub_cache_dir()}{partly}) "
                    f"and downloads are off ({why})",
                    hub_fixes(source),
                )
            )
        return out
    folder = Path(source).expanduser()
    if not folder.is_dir():
        out.append(
            Problem(
                key,
                source,
                "is neither an existing model folder nor a hub id (namespace/name)",
                "give the folder that holds config.json, speech_tokenizer/ and *.safetensors, or a hub id "
                "such as Qwen/Qwen3-TTS-12Hz-1.7B-Base",
            )
        )
    elif missing := folder_missing_files(folder):
        out.append(
            Problem(
                key,
                source,
                f"is a folder without {', '.join(missing)}: not a Qwen3-TTS Base model folder",
                "point at the folder a full download made (`hf download Qwen/Qwen3-TTS-12Hz-1.7B-Base "
                "--local-dir DIR`), or the hub id",
            )
        )
    return out


def attn_problems(model: Any, key: str = "model.attn_implementation") -> list[Problem]:
    """flash_attention_2 asked for where it cannot run: the package is missing, or the device is the CPU."""
    if model.attn_implementation != "flash_attention_2":
        return []
    if importlib.util.find_spec("flash_attn") is None:
        return [
            Problem(
                key,
                model.attn_implementation,
                "needs the flash-attn package, which is not installed",
                "pip install flash-attn --no-build-isolation (CUDA only), or model.attn_implementation=auto "
                "(flash-attention 2 when installed, else SDPA)",
            )
        ]
    if model.device == "cpu":
        return [Problem(key, model.attn_implementation, "runs on CUDA only", "model.attn_implementation=sdpa")]
    return []


def hub_error(exc: BaseException) -> BaseException | None:
    """The huggingface_hub error behind `exc` (transformers wraps them in OSError), None when there is none."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.startswith("huggingface_hub"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def hub_error_message(exc: BaseException) -> str:
    """One readable message for a model load that failed at run time (hub unreachable or repo unknown):
    `check` cannot see an unreachable hub without a network call, so this is the last line of defence."""
    repo_id = getattr(exc, "repo_id", None) or "<model.source>"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"error: the model could not be loaded from the Hugging Face hub or its local cache ({hub_cache_dir()}): "
        f"{type(exc).__name__}: {first}\n  Fix: {hub_fixes(repo_id)}"
    )
