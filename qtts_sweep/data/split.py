"""Leak-free, deterministic train/val/test assignment. Pure functions on plain data.

A row's split is a function of its *normalized text* (and a salt) only: reordering or appending to the manifest
never moves an existing line, and repeated prompts land in one split. Where the hash split leaves val or test
below its minimum, the train texts with the lowest hash values are moved in (stable too).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict

SPLITS = ("train", "val", "test")


def normalize_text(text: str) -> str:
    """Case-folded, accents kept, punctuation dropped, whitespace collapsed: what "the same line" means."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def text_unit(text: str, salt: str) -> float:
    """Uniform number in [0, 1) from sha256(salt + normalized text)."""
    digest = hashlib.sha256(f"{salt}\0{normalize_text(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SplitTooSmall(ValueError):
    pass


def assign_splits(
    texts: dict[str, str], val_fraction: float, test_fraction: float, min_val: int, min_test: int, salt: str
) -> dict[str, str]:
    """Map row id -> split for rows given as {id: text}.

    Raises:
        SplitTooSmall: when the minimum val/test sizes cannot be met while keeping at least one training text.
    """
    by_text: dict[str, list[str]] = defaultdict(list)
    for row_id, text in texts.items():
        by_text[normalize_text(text)].append(row_id)
    units = {norm: text_unit(norm, salt) for norm in by_text}
    group: dict[str, str] = {}
    for norm, u in units.items():
        group[norm] = "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"

    def size(split: str) -> int:
        return sum(len(by_text[n]) for n, s in group.items() if s == split)

    for split, minimum in (("val", min_val), ("test", min_test)):
        candidates = sorted((units[n], n) for n, s in group.items() if s == "train")
        while size(split) < minimum:
            if len(candidates) <= 1:
                raise SplitTooSmall(
                    f"{len(texts)} lines ({len(by_text)} distinct texts) cannot fill val >= {min_val} and "
                    f"test >= {min_test} and still train"
                )
            _, norm = candidates.pop(0)
            group[norm] = split
    return {row_id: group[norm] for norm, ids in by_text.items() for row_id in ids}
