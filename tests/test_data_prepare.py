"""`prepare`: every problem of a dataset reported at once (file:line + fix) before the codec loads; real bad
files; resampling to 24 kHz; codec codes cached by content."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from qtts_sweep.config.loader import load_config
from qtts_sweep.data.prepare import DataError, prepare_dataset
from qtts_sweep.data.rows import PreparedRow, read_split, write_split
from qtts_sweep.util.problems import ValidationError
from tests.helpers.sweeps import DEMO_DIR


def _speech(i: int) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(DEMO_DIR / "wavs" / f"demo_{i:04d}.flac", dtype="float32")
    return wav, sr


def _at(wav: np.ndarray, sr: int, new_sr: int) -> np.ndarray:
    return soxr.resample(wav, sr, new_sr).astype(np.float32)


def _write_manifest(folder: Path, rows: list) -> Path:
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    path = folder / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _good_rows(folder: Path, n: int, start: int = 1) -> list[dict]:
    (folder / "wavs").mkdir(exist_ok=True)
    shutil.copy(DEMO_DIR / "ref" / "ref.flac", folder / "ref.flac")
    rows = []
    for i in range(start, start + n):
        shutil.copy(DEMO_DIR / "wavs" / f"demo_{i:04d}.flac", folder / "wavs" / f"g{i}.flac")
        text = json.loads((DEMO_DIR / "manifest.jsonl").read_text().splitlines()[i - 1])["text"]
        rows.append({"audio": f"wavs/g{i}.flac", "text": text, "ref_audio": "ref.flac"})
    return rows


def _cfg(manifest: Path, *extra: str):
    return load_config(["model=tiny", "data=jsonl", f"data.manifest={manifest}", "data.name=t", *extra])


@pytest.fixture
def bad_dataset(tmp_path) -> Path:
    """Real files, each broken in one way, plus valid ones in odd formats."""
    w = tmp_path / "wavs"
    rows = _good_rows(tmp_path, 12)
    speech, sr = _speech(20)
    sf.write(w / "stereo44k.wav", np.stack([_at(speech, sr, 44100)] * 2, axis=1), 44100)
    sf.write(w / "mono16k.wav", _at(speech, sr, 16000), 16000)
    sf.write(w / "pcm8.wav", _at(_speech(21)[0], sr, 16000), 16000, subtype="PCM_U8")
    sf.write(w / "float48k.wav", _at(_speech(22)[0], sr, 48000), 48000, subtype="FLOAT")
    (w / "empty.wav").write_bytes(b"")
    full = (w / "mono16k.wav").read_bytes()
    (w / "trunc_header.wav").write_bytes(full[:20])
    (w / "notaudio.wav").write_text("this is a text file, not audio\n")
    nan = _speech(23)[0].copy()
    nan[1000:1010] = np.nan
    sf.write(w / "nan.wav", nan, sr, subtype="FLOAT")
    sf.write(w / "silent.wav", np.zeros(sr * 2, dtype=np.float32), sr)
    sf.write(w / "clipped.wav", np.clip(_speech(24)[0] * 40, -1, 1), sr)
    sf.write(w / "short.wav", _speech(25)[0][: sr // 5], sr)
    sf.write(w / "long.wav", np.tile(_speech(26)[0], 12), sr)
    shutil.copy(w / "g1.flac", w / "dup_content.flac")
    for i in (30, 31):
        shutil.copy(DEMO_DIR / "wavs" / f"demo_{i:04d}.flac", w / f"d{i}.flac")
    odd = [
        {"audio": "wavs/stereo44k.wav", "text": "A stereo recording at forty four kilohertz.", "ref_audio": "ref.flac"},
        {"audio": "wavs/mono16k.wav", "text": "A sixteen kilohertz recording.", "ref_audio": "ref.flac"},
        {"audio": "wavs/pcm8.wav", "text": "Eight bit samples.", "ref_audio": "ref.flac"},
        {"audio": "wavs/float48k.wav", "text": "Float samples at forty eight.", "ref_audio": "ref.flac"},
    ]
    bad = [
        {"audio": "wavs/empty.wav", "text": "empty file", "ref_audio": "ref.flac"},  # line 17
        {"audio": "wavs/trunc_header.wav", "text": "truncated header", "ref_audio": "ref.flac"},
        {"audio": "wavs/notaudio.wav", "text": "text named wav", "ref_audio": "ref.flac"},
        {"audio": "wavs/nan.wav", "text": "nan samples", "ref_audio": "ref.flac"},  # 20
        {"audio": "wavs/silent.wav", "text": "silence", "ref_audio": "ref.flac"},
        {"audio": "wavs/clipped.wav", "text": "clipped", "ref_audio": "ref.flac"},
        {"audio": "wavs/short.wav", "text": "too short", "ref_audio": "ref.flac"},
        {"audio": "wavs/long.wav", "text": "too long", "ref_audio": "ref.flac"},
        {"audio": "wavs/dup_content.flac", "text": "duplicate content", "ref_audio": "ref.flac"},  # 25
        {"audio": "wavs/missing.wav", "text": "missing file", "ref_audio": "ref.flac"},
        {"audio": "wavs/g2.flac", "text": "   ", "ref_audio": "ref.flac"},
        '{"audio": "wavs/g3.flac", "text": "broken json"',
        "Caf\xe9 latin-1 line".encode("latin-1"),  # 29: not UTF-8
        {"audio": "wavs/g4.flac", "text": "no reference"},
        {"id": "dupid", "audio": "wavs/d30.flac", "text": "duplicate id a", "ref_audio": "ref.flac"},
        {"id": "dupid", "audio": "wavs/d31.flac", "text": "duplicate id b", "ref_audio": "ref.flac"},  # 32
    ]
    return _write_manifest(tmp_path, rows + odd + bad)


EXPECTED_BAD_LINES = {17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32}


def test_strict_mode_reports_every_problem_with_file_and_line(bad_dataset, runs_dir):
    with pytest.raises(DataError) as err:
        prepare_dataset(_cfg(bad_dataset, "data.max_duration_s=15"), progress=False)
    lines = {int(p.key.rsplit(":", 1)[1]) for p in err.value.problems}
    assert lines == EXPECTED_BAD_LINES, str(err.value)
    text = str(err.value)
    for needle in (
        "empty",
        "cannot be decoded",
        "NaN",
        "silent",
        "clipped",
        "outside",
        "same audio content",
        "does not exist",
        "text is empty",
        "not valid JSON",
        "not valid UTF-8",
        "lacks key",
        "duplicate id",
    ):
        assert needle in text, needle
    assert all("Fix:" in line for line in text.splitlines()[1:])
    assert not (runs_dir / "data" / "t").exists()  # nothing written before the whole set was checked


def test_lenient_mode_skips_bad_rows_and_converts_the_rest(bad_dataset):
    ds = prepare_dataset(_cfg(bad_dataset, "data.strict=false", "data.max_duration_s=15"), progress=False)
    s = ds.summary
    assert s["kept"] == 12 + 4 + 1, sorted(
        r.id for v in ds.splits.values() for r in v
    )  # good + odd formats + the first of the two rows sharing an id
    assert len(s["skipped"]) == len(EXPECTED_BAD_LINES)
    assert s["downmixed"] == 1 and s["resampled"] == s["kept"]
    for rows in ds.splits.values():
        for row in rows:
            info = sf.info(row.audio)
            assert info.samplerate == 24000 and info.channels == 1
            codes = np.array(row.audio_codes)
            assert codes.shape == (int(np.ceil(info.frames / 1920)), 16)
    assert sf.info(bad_dataset.parent / "wavs" / "stereo44k.wav").samplerate == 44100  # originals untouched
    assert min(len(ds.splits["val"]), len(ds.splits["test"])) >= 3


def test_cache_reencodes_only_new_content(tmp_path, tiny_model_dir, monkeypatch):
    rows = _good_rows(tmp_path, 10)
    manifest = _write_manifest(tmp_path, rows)
    own_runs = f"paths.runs_dir={tmp_path / 'runs'}"  # an empty cache, whatever other tests encoded
    models = f"paths.models_dir={tiny_model_dir.parent}"
    first = prepare_dataset(_cfg(manifest, own_runs, models), progress=False)
    assert first.summary["encoded"] == 10
    again = prepare_dataset(_cfg(manifest, own_runs, models), progress=False)
    assert again.summary["encoded"] == 0 and again.hash == first.hash
    # the split files hold exactly the typed rows, and read back equal
    assert {s: read_split(first.dir / f"{s}.jsonl") for s in first.splits} == first.splits
    assert sum(map(len, first.splits.values())) == 10 and isinstance(first.splits["train"][0], PreparedRow)

    # every other consumer loads the prepared folder: no clip is decoded, checked or hashed again
    from qtts_sweep.data import prepare

    with monkeypatch.context() as m:
        for name in ("sha256_file", "inspect_audio", "prepare_dataset"):
            m.setattr(prepare, name, lambda *a, **k: pytest.fail("load_dataset re-checked the clips"))
        loaded = prepare.load_dataset(_cfg(manifest, own_runs, models))
    assert loaded.hash == first.hash and loaded.splits == first.splits and loaded.ref_audio == first.ref_audio

    # Rewrite one clip in place with new content but the same modification time: must be re-encoded.
    target = tmp_path / "wavs" / "g3.flac"
    st = target.stat()
    wav, sr = _speech(40)
    sf.write(target, wav, sr)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert prepare.load_prepared(_cfg(manifest, own_runs, models)) is None  # the folder no longer matches
    changed = prepare.load_dataset(_cfg(manifest, own_runs, models))
    assert changed.summary["encoded"] == 1 and changed.hash != first.hash

    appended = _write_manifest(tmp_path, rows + _good_rows(tmp_path, 2, start=50))
    grown = prepare_dataset(_cfg(appended, own_runs, models), progress=False)
    assert grown.summary["encoded"] == 2


def test_cached_prepare_does_not_import_torch(tmp_path, tiny_model_dir):
    manifest = _write_manifest(tmp_path, _good_rows(tmp_path, 10))
    code = (
        "import sys\n"
        "from qtts_sweep.cli import main\n"
        f"rc = main(['prepare', 'model=tiny', 'data=jsonl', 'data.manifest={manifest}', 'data.name=nt',\n"
        f"           'paths.runs_dir={tmp_path / 'runs'}', 'paths.models_dir={tiny_model_dir.parent}'])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)\n"
    )
    env = {**os.environ}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    # the whole last line: "NO-TORCH 0" also ends with "TORCH 0"
    assert first.stdout.strip().splitlines()[-1] == "TORCH 0", first.stdout[-2000:] + first.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "NO-TORCH 0", second.stdout[-2000:] + second.stderr[-2000:]
    assert "10 encoded" in first.stdout and "10 from cache" in second.stdout


def test_cli_prepare_exits_2_on_a_bad_dataset(bad_dataset, capsys):
    from qtts_sweep.cli import main

    rc = main(["prepare", "model=tiny", "data=jsonl", f"data.manifest={bad_dataset}", "data.name=cli"])
    assert rc == 2
    assert f"{bad_dataset}:17" in capsys.readouterr().err


def test_ljspeech_layout(tmp_path):
    (tmp_path / "wavs").mkdir()
    lines = []
    for i in range(1, 11):
        wav, sr = _speech(i)
        sf.write(tmp_path / "wavs" / f"LJ{i:03d}.wav", wav, sr)
        text = json.loads((DEMO_DIR / "manifest.jsonl").read_text().splitlines()[i - 1])["text"]
        lines.append(f"LJ{i:03d}|{text}|{text}")
    lines.append("LJ999|only|three|four")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    ref = DEMO_DIR / "ref" / "ref.flac"
    over = ["model=tiny", "data=ljspeech", f"data.root={tmp_path}", "data.name=lj", f"data.ref_audio={ref}"]
    with pytest.raises(DataError, match="metadata.csv:11"):
        prepare_dataset(load_config(over), progress=False)
    ds = prepare_dataset(load_config([*over, "data.strict=false"]), progress=False)
    assert ds.summary["kept"] == 10


def test_a_malformed_split_file_names_every_bad_line(tmp_path):
    row = PreparedRow("a", "Hi.", "auto", "a.wav", "ab12", 1.5, "ref.wav", "m.jsonl:1", [[1] * 16])
    path = tmp_path / "train.jsonl"
    write_split(path, [row, row])
    assert read_split(path) == [row, row]
    lines = path.read_text().splitlines()
    extra = json.dumps({**json.loads(lines[0]), "speaker": "x"})
    path.write_text("\n".join([lines[0], "{not json", extra]) + "\n")
    with pytest.raises(ValidationError) as err:
        read_split(path)
    text = str(err.value)
    assert f"{path}:2" in text and f"{path}:3" in text and "speaker" in text and f"{path}:1" not in text
