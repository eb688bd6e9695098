"""`atomic_folder`: never a moment without the folder, and two writers of one folder never fail."""

from __future__ import annotations

import threading

import pytest

from qtts_sweep.util.fsio import atomic_folder


def _write(final, tag: str, replace: bool = True) -> None:
    with atomic_folder(final, replace=replace) as tmp:
        (tmp / "a.txt").write_text(tag)
        (tmp / "b.txt").write_text(tag)


@pytest.mark.parametrize("replace", [True, False])
def test_two_writers_of_one_folder_never_fail_and_leave_one_complete_folder(tmp_path, replace):
    final = tmp_path / "entry"
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(150):
                _write(final, f"{tag}{i}", replace)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    a, b = (final / "a.txt").read_text(), (final / "b.txt").read_text()
    assert a == b  # both files from one writer: never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no temporary or set-aside folder left


def test_a_reader_never_finds_the_folder_missing_while_it_is_replaced(tmp_path):
    final = tmp_path / "entry"
    _write(final, "first")
    stop = threading.Event()
    missing = []

    def reader() -> None:
        while not stop.is_set():
            if not (final / "a.txt").is_file():
                missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            _write(final, str(i))
    finally:
        stop.set()
        t.join()
    assert missing == [] and (final / "a.txt").read_text() == "299"
