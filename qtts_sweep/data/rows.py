"""One prepared line (`PreparedRow`) and the one pair of functions that writes and reads a split file.

A split file (`runs/data/<name>/<split>.jsonl`) holds one JSON object per line with exactly the fields of
`PreparedRow`; `read_split` rejects a file whose rows miss a field or carry an unknown one, naming file and line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from qtts_sweep.util.fsio import write_text_atomic
from qtts_sweep.util.problems import Problem, ValidationError


@dataclass(frozen=True)
class PreparedRow:
    """A validated line of the dataset after `prepare`: its text, its 24 kHz audio and its codec codes."""

    id: str
    text: str
    language: str
    audio: str  # 24 kHz mono wav under runs/data/<name>/audio/
    audio_sha256: str  # of the original file: the dataset hash and the caches key on it
    duration_s: float
    ref_audio: str  # the dataset's one speaker reference clip (24 kHz copy)
    source: str  # manifest file:line the row came from
    audio_codes: list[list[int]]  # frames x 16 code groups (a list: cheap to turn into a tensor)


FIELDS = tuple(f.name for f in dataclasses.fields(PreparedRow))


def write_split(path: Path, rows: list[PreparedRow]) -> None:
    write_text_atomic(path, "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows))


def read_split(path: Path) -> list[PreparedRow]:
    """Every row of a split file; ValidationError listing every malformed line at once."""
    rows, problems = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(f"{path}:{n}", line[:40], f"is not JSON ({exc})", "re-run `qtts-sweep prepare`"))
            continue
        if not isinstance(obj, dict) or set(obj) != set(FIELDS):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            problems.append(
                Problem(f"{path}:{n}", got, f"fields must be exactly {list(FIELDS)}", "re-run `qtts-sweep prepare`")
            )
            continue
        rows.append(PreparedRow(**obj))
    if problems:
        raise ValidationError(problems, str(path))
    return rows
