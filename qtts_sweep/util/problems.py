"""What every check of user input reports: `Problem` (where, the value, the rule, the fix) and `ValidationError`
(all problems found, never just the first). Config, datasets, sweep files, bundles, metric declarations and
command arguments all report through these two, so `qtts-sweep` prints every kind of bad input the same way.

Owns: the two types and their text. Does not own: any rule (each checker owns its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem: where (a config key, `file:line`, a flag), what value, which rule, how to fix it."""

    key: str
    value: Any
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"`{self.key}` = {self.value!r}: {self.rule}. Fix: {self.fix}"


class ValidationError(ValueError):
    """Raised with every problem found, never just the first (config, dataset, bundle, ...)."""

    def __init__(self, problems: list[Problem], source: str = "input"):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) in the {source}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
