"""Split assignment: pure, deterministic, stable under reorder/append, leak-free, minimum sizes honoured."""

from __future__ import annotations

import random

import pytest

from qtts_sweep.data.split import SplitTooSmall, assign_splits, normalize_text

ARGS = {"val_fraction": 0.1, "test_fraction": 0.1, "min_val": 3, "min_test": 3, "salt": "s"}


def _texts(n: int) -> dict[str, str]:
    return {f"u{i:04d}": f"Sentence number {i} is spoken here." for i in range(n)}


def test_deterministic_and_stable_under_reordering_and_appending():
    base = _texts(200)
    first = assign_splits(base, **ARGS)
    items = list(base.items())
    random.Random(0).shuffle(items)
    assert assign_splits(dict(items), **ARGS) == first
    grown = assign_splits({**base, **{f"x{i}": f"Another new line {i}." for i in range(100)}}, **ARGS)
    assert {k: grown[k] for k in base} == first


def test_fractions_are_roughly_honoured():
    counts = {"train": 0, "val": 0, "test": 0}
    for split in assign_splits(_texts(2000), **ARGS).values():
        counts[split] += 1
    assert 150 <= counts["val"] <= 250 and 150 <= counts["test"] <= 250


def test_repeated_prompts_land_in_one_split():
    texts = {f"a{i}": "The same prompt, again!" if i % 10 == 0 else f"Line {i}." for i in range(300)}
    texts["b"] = "the SAME prompt again"  # normalizes equal
    split = assign_splits(texts, **ARGS)
    assert len({split[k] for k in texts if normalize_text(texts[k]) == "the same prompt again"}) == 1


def test_small_sets_get_the_minimum_in_val_and_test():
    split = assign_splits(_texts(12), **{**ARGS, "min_val": 2, "min_test": 2})
    assert sum(s == "val" for s in split.values()) >= 2
    assert sum(s == "test" for s in split.values()) >= 2
    assert sum(s == "train" for s in split.values()) >= 1


def test_impossible_minimum_fails_clearly():
    with pytest.raises(SplitTooSmall, match="cannot fill"):
        assign_splits(_texts(5), **{**ARGS, "min_val": 3, "min_test": 3})
