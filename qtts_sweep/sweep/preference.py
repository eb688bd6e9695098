"""Human A/B judgements of a study's trials, stored with the study itself.

Each judgement is one study user attribute, `listen:<uuid>` -> {a, b, line, choice, listener, at}, written through
Optuna's public `Study.set_user_attr`: one key per judgement, so listeners judging at the same time never overwrite
each other, and the judgements live wherever the study lives (SQLite, journal file, PostgreSQL). `choice` is the
trial number preferred, or "same".

Owns: the record format, the tally per trial (wins / losses / ties and the number of judgements), how a tally reads
in a report and as MLflow metrics. Does not own: which pairs are played (listen.py) or what is promoted (an
objective decides; `promote --trial` is the human override).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

PREFIX = "listen:"
SAME = "same"


@dataclass
class Tally:
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def short(self) -> str:
        """`W-L-T/n`, for a table cell."""
        return f"{self.wins}-{self.losses}-{self.ties}/{self.n}"

    def describe(self) -> str:
        return f"{self.wins} wins, {self.losses} losses, {self.ties} ties in {self.n} judgements"


def record(study: Any, a: int, b: int, line: str, choice: int | str, listener: str = "") -> str:
    """Store one judgement of trial `a` against trial `b` on held-out line `line`; returns its key."""
    if choice != SAME and choice not in (a, b):
        raise ValueError(f"choice {choice!r} is neither trial {a}, trial {b} nor {SAME!r}")
    key = PREFIX + uuid.uuid4().hex
    study.set_user_attr(
        key, {"a": int(a), "b": int(b), "line": line, "choice": choice, "listener": listener, "at": time.time()}
    )
    return key


def judgements(study: Any) -> list[dict[str, Any]]:
    """Every stored judgement, oldest first."""
    found = [v for k, v in study.user_attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)]
    return sorted(found, key=lambda j: j.get("at", 0.0))


def tally(study: Any) -> dict[int, Tally]:
    """{trial number: its wins, losses and ties} over every judgement it took part in."""
    out: dict[int, Tally] = {}
    for j in judgements(study):
        a, b, choice = int(j["a"]), int(j["b"]), j["choice"]
        for t in (a, b):
            out.setdefault(t, Tally())
        if choice == SAME:
            out[a].ties += 1
            out[b].ties += 1
        else:
            winner, loser = (a, b) if int(choice) == a else (b, a)
            out[winner].wins += 1
            out[loser].losses += 1
    return out


def preferred(tallies: dict[int, Tally]) -> int | None:
    """The trial listeners preferred most (win rate, ties counting half; then more judgements, lower number)."""
    scored = [(-(t.wins + 0.5 * t.ties) / t.n, -t.n, n) for n, t in tallies.items() if t.n]
    return min(scored)[2] if scored else None


def metrics(tallies: dict[int, Tally]) -> dict[str, float]:
    """The tally as MLflow metrics of the study's parent run."""
    out = {"listen_judgements": float(sum(t.n for t in tallies.values()) / 2)}
    for n, t in tallies.items():
        out.update(
            {f"listen_trial{n}_wins": t.wins, f"listen_trial{n}_losses": t.losses, f"listen_trial{n}_ties": t.ties}
        )
    return out


def report_lines(tallies: dict[int, Tally], top: list[int]) -> list[str]:
    """What the report prints under its table: the preference of each top trial that was judged."""
    judged = [n for n in top if n in tallies]
    if not judged:
        return []
    total = sum(t.n for t in tallies.values()) // 2
    lines = [f"human preference (qtts-sweep listen, blind A/B; {total} judgements):"]
    lines += [f"  trial {n}: {tallies[n].describe()}" for n in judged]
    best = preferred(tallies)
    if best is not None and top and best != top[0]:
        lines.append(f"  listeners prefer trial {best}; to ship it instead: qtts-sweep promote <study> --trial {best}")
    return lines
