"""Reads dataset manifests into `Row`s, collecting every malformed line as a `Problem` (file:line, rule, fix).

Two layouts: upstream-style JSONL (`audio`, `text`, `ref_audio`, optional `id`/`language`; paths relative to the
manifest) and LJSpeech (`metadata.csv` as `id|text|normalized text`, audio in `wavs/<id>.wav`). No audio is
opened here; see `audio.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qtts_sweep.config.schema import DataConfig
from qtts_sweep.util.problems import Problem


@dataclass(frozen=True)
class Row:
    """One utterance as the manifest gives it."""

    id: str
    text: str
    audio: Path
    ref_audio: Path | None
    language: str
    where: str  # "file:line", for every message about this row


def _decode_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str]]:
    """(line number, text) of every non-empty line; undecodable lines become problems."""
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(
                    f"{path}:{n}",
                    raw[:40],
                    f"is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                    "re-save the manifest as UTF-8",
                )
            )
            continue
        if line.strip():
            out.append((n, line.lstrip("\ufeff")))
    return out


def _text_problem(text: object, where: str) -> Problem | None:
    if not isinstance(text, str) or not text.strip():
        return Problem(where, text, "text is empty or not a string", "give the exact transcript, or drop the row")
    return None


def read_jsonl(path: Path) -> tuple[list[Row], list[Problem]]:
    problems: list[Problem] = []
    rows: list[Row] = []
    base = path.parent
    for n, line in _decode_lines(path, problems):
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    where,
                    line[:60],
                    f"is not valid JSON ({exc.msg}, column {exc.colno})",
                    'write one object per line: {"audio": ..., "text": ..., "ref_audio": ...}',
                )
            )
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(where, line[:60], "is not a JSON object", "write one object per line"))
            continue
        missing = [k for k in ("audio", "text", "ref_audio") if k not in obj]
        if missing:
            problems.append(
                Problem(
                    where,
                    sorted(obj),
                    f"lacks key(s) {missing}",
                    "every row needs audio, text and ref_audio (paths relative to the manifest)",
                )
            )
            continue
        bad_text = _text_problem(obj["text"], where)
        if bad_text:
            problems.append(bad_text)
            continue
        audio = base / str(obj["audio"])
        ref = base / str(obj["ref_audio"]) if obj["ref_audio"] else None
        rows.append(
            Row(
                id=str(obj.get("id") or Path(str(obj["audio"])).stem),
                text=obj["text"].strip(),
                audio=audio,
                ref_audio=ref,
                language=str(obj.get("language", "auto")),
                where=where,
            )
        )
    return rows, problems


def read_ljspeech(root: Path) -> tuple[list[Row], list[Problem]]:
    problems: list[Problem] = []
    rows: list[Row] = []
    meta = root / "metadata.csv"
    if not meta.is_file():
        return [], [Problem(str(meta), None, "does not exist", "point data.root at the folder with metadata.csv")]
    for n, line in _decode_lines(meta, problems):
        where = f"{meta}:{n}"
        fields = line.rstrip("\r\n").split("|")
        if len(fields) not in (2, 3):
            problems.append(
                Problem(
                    where,
                    line[:60],
                    f"has {len(fields)} '|'-separated fields, expected 2 or 3",
                    "write id|text|normalized text",
                )
            )
            continue
        text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        bad_text = _text_problem(text, where)
        if bad_text:
            problems.append(bad_text)
            continue
        rows.append(
            Row(
                id=fields[0].strip(),
                text=text.strip(),
                audio=root / "wavs" / f"{fields[0].strip()}.wav",
                ref_audio=None,
                language="auto",
                where=where,
            )
        )
    return rows, problems


def read_manifest(cfg: DataConfig) -> tuple[list[Row], list[Problem]]:
    """Rows of the configured dataset and every problem found in the manifest itself."""
    if cfg.format == "ljspeech":
        return read_ljspeech(Path(cfg.root))
    path = Path(cfg.manifest)
    if not path.is_file():
        return [], [Problem(str(path), None, "manifest does not exist", "check data.manifest")]
    return read_jsonl(path)
