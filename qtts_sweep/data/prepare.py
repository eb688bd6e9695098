"""`qtts-sweep prepare`: validate a whole dataset before any compute, then resample, split and cache codec codes.

Order matters: every row is checked (manifest syntax, text, audio decodability, rate, channels, NaN/Inf,
silence, clipping, duration, duplicates, reference clip) and *all* problems are reported together before the
codec is loaded. Strict mode (default) stops with exit 2; lenient mode skips the bad rows and lists them.

Output (`runs/data/<name>/`): `train.jsonl`, `val.jsonl`, `test.jsonl` (24 kHz mono audio + `audio_codes`),
`audio/` (24 kHz copies named by the original's sha256, the reference clip included), `summary.json` and
`dataset_hash` — the content hash later stages key on. Originals are never modified. Per-file facts and codes
are cached by content hash under `runs/cache/`, so a fully cached run reads the audio bytes once for hashing
and never imports torch.

Two entry points: `prepare_dataset` checks every clip and materialises the folder (the `prepare` command, and
anything that finds no usable folder); `load_dataset` is what every other consumer (sweep workers, promote,
report, synth, train) calls: it reads the prepared folder back -- split files, codes, reference -- when its
recorded fingerprint (the data config, the tokenizer, and the size and mtime of the manifest and of every clip)
still matches, so nothing is re-decoded or re-hashed, and falls back to `prepare_dataset` otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from qtts_sweep.config.schema import Config, DataConfig
from qtts_sweep.data.audio import TARGET_SR, AudioInfo, inspect_audio, sha256_file, to_24k_mono, write_wav_24k
from qtts_sweep.data.codes import CodeCache, encode_missing, tokenizer_identity
from qtts_sweep.data.manifest import Row, read_manifest
from qtts_sweep.data.rows import PreparedRow, read_split, write_split
from qtts_sweep.data.speaker_check import SpeakerOutlier, cached_embeddings, speaker_outliers
from qtts_sweep.data.split import SPLITS, SplitTooSmall, assign_splits
from qtts_sweep.util.fsio import write_text_atomic
from qtts_sweep.util.problems import Problem, ValidationError

AUTO = "auto"  # data.ref_audio: pick the reference by auto_reference's rule


class DataError(ValidationError):
    def __init__(self, problems: list[Problem], source: str = "dataset"):
        super().__init__(problems, source)


@dataclass
class PreparedDataset:
    """What `prepare` produced: where, its content hash, the split rows and a summary."""

    dir: Path
    hash: str
    splits: dict[str, list[PreparedRow]]
    ref_audio: Path
    summary: dict = field(default_factory=dict)


def _info_cached(path: Path, cache_dir: Path) -> AudioInfo:
    sha = sha256_file(path)
    cached = cache_dir / f"{sha}.json"
    if cached.is_file():
        return AudioInfo(**json.loads(cached.read_text()))
    info = inspect_audio(path, sha)
    write_text_atomic(cached, json.dumps(info.to_dict()))
    return info


def audio_problems(info: AudioInfo, where: str, name: str, cfg: DataConfig) -> list[Problem]:
    """Every signal-level problem of one decoded file (empty list: usable)."""
    if info.error:
        return [Problem(where, name, info.error, "re-export the file as WAV/FLAC, or drop the row")]
    out = []
    if info.nonfinite:
        out.append(Problem(where, name, "contains NaN or Inf samples", "re-export the audio; drop the row"))
    peak_db = 20 * __import__("math").log10(max(info.peak, 1e-12))
    if peak_db < cfg.silence_peak_dbfs:
        out.append(
            Problem(
                where,
                name,
                f"is silent (peak {peak_db:.0f} dBFS < {cfg.silence_peak_dbfs:.0f})",
                "check the recording; drop the row or lower data.silence_peak_dbfs",
            )
        )
    if info.clipped_fraction > cfg.max_clipped_fraction:
        out.append(
            Problem(
                where,
                name,
                f"is heavily clipped ({info.clipped_fraction:.1%} of samples at full "
                f"scale > {cfg.max_clipped_fraction:.1%})",
                "re-record or drop the row, or raise data.max_clipped_fraction",
            )
        )
    if not cfg.min_duration_s <= info.duration_s <= cfg.max_duration_s:
        out.append(
            Problem(
                where,
                name,
                f"lasts {info.duration_s:.2f} s, outside [{cfg.min_duration_s}, {cfg.max_duration_s}] s",
                "trim/split the clip, drop the row, or change data.min_duration_s / data.max_duration_s",
            )
        )
    return out


def _check_rows(rows: list[Row], cfg: DataConfig, info_dir: Path) -> tuple[dict[str, AudioInfo], list[Problem]]:
    problems: list[Problem] = []
    infos: dict[str, AudioInfo] = {}
    seen_ids: dict[str, str] = {}
    seen_audio: dict[str, str] = {}
    no_ref: list[Row] = []
    for row in rows:
        if row.id in seen_ids:
            problems.append(
                Problem(row.where, row.id, f"duplicate id (first at {seen_ids[row.id]})", "give every row a unique id")
            )
            continue
        seen_ids[row.id] = row.where
        if not row.audio.is_file():
            problems.append(
                Problem(
                    row.where,
                    str(row.audio),
                    "audio file does not exist",
                    "fix the path (relative to the manifest) or drop the row",
                )
            )
            continue
        if not cfg.ref_audio and (row.ref_audio is None or not row.ref_audio.is_file()):
            no_ref.append(row)
            continue
        info = _info_cached(row.audio, info_dir)
        found = audio_problems(info, row.where, row.audio.name, cfg)
        if not found and info.sha256 in seen_audio:
            found.append(
                Problem(
                    row.where,
                    row.audio.name,
                    f"same audio content as {seen_audio[info.sha256]}",
                    "drop the duplicate row (duplicates would leak across splits)",
                )
            )
        problems += found
        if not found:
            infos[row.where] = info
            seen_audio[info.sha256] = row.where
    if no_ref:
        problems.append(_missing_refs_problem(no_ref))
    return infos, problems


def _missing_refs_problem(rows: list[Row]) -> Problem:
    """One cause, one message: rows without a usable reference clip, however many there are."""
    shown = ", ".join(r.where for r in rows[:3]) + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")
    return Problem(
        shown,
        str(rows[0].ref_audio),
        f"{len(rows)} row(s) have no existing ref_audio clip",
        "set data.ref_audio=auto (picks the clean training clip of median duration) or data.ref_audio=/path/to/"
        "clip.wav for all rows, or give each row a ref_audio",
    )


def rows_by_split(good: list[Row], data: DataConfig) -> dict[str, str]:
    """{row id: split} for the rows that passed their checks, by the configured text-hash split."""
    return assign_splits(
        {r.id: r.text for r in good},
        data.split.val_fraction,
        data.split.test_fraction,
        data.split.min_val,
        data.split.min_test,
        data.split.salt,
    )


def auto_reference(good: list[Row], infos: dict[str, AudioInfo], data: DataConfig) -> Row | None:
    """`data.ref_audio=auto`: the clip of median duration among the rows that passed every check and fall in the
    training split (ties: the lower median, then the id). Median rather than longest: a typical clip of the
    speaker, neither a fragment nor a run-on; training split: val/test lines stay unseen."""
    split_of = rows_by_split(good, data)
    train = sorted((r for r in good if split_of[r.id] == "train"), key=lambda r: (infos[r.where].duration_s, r.id))
    return train[(len(train) - 1) // 2] if train else None


def _reference(rows: list[Row], cfg: DataConfig) -> tuple[Path | None, str]:
    if cfg.ref_audio == AUTO:
        return None, AUTO
    if cfg.ref_audio:
        return Path(cfg.ref_audio), "data.ref_audio"
    for row in rows:
        if row.ref_audio is not None:
            return row.ref_audio, f"ref_audio of {row.where}"
    return None, "the manifest"


SPEAKER_FIX = "listen to it; drop clips of other speakers, or data.speaker_check=off for a deliberately mixed dataset"


def check_speaker(rows: list[Row], infos: dict[str, AudioInfo], data: DataConfig, cache: Path) -> list[SpeakerOutlier]:
    """Speaker outliers among the rows that passed the checks (`data.speaker_check`; [] when off)."""
    if data.speaker_check == "off":
        return []
    # metrics/ sits above data/ (and pulls torch in): lazily, like the codec, only when `prepare` embeds.
    from qtts_sweep.metrics.speaker import SpeakerSimilarity

    encoder = SpeakerSimilarity()
    items = [(r.where, infos[r.where].sha256, lambda r=r: to_24k_mono(r.audio)) for r in rows if r.where in infos]
    return speaker_outliers(cached_embeddings(items, cache, lambda wav: encoder.embed(wav, TARGET_SR)))


def _pick_auto(rows: list[Row], infos: dict[str, AudioInfo], data: DataConfig) -> Row | None:
    good = [r for r in rows if r.where in infos]
    try:
        return auto_reference(good, infos, data) if good else None
    except SplitTooSmall:  # reported with its fix once the split runs on the same rows
        return good[0]


def _dataset_hash(splits: dict[str, list[PreparedRow]], ref_sha: str, tok_id: str) -> str:
    canon = {s: [[r.id, r.text, r.language, r.audio_sha256] for r in rows] for s, rows in splits.items()}
    blob = json.dumps({"splits": canon, "ref": ref_sha, "tokenizer": tok_id, "sr": TARGET_SR}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fingerprint(cfg: Config, rows: list[Row] | None = None) -> str:
    """What a prepared folder was made from, by stat only (no decoding, no hashing of clips): the data config, the
    speech tokenizer's identity, and (path, size, mtime) of the manifest, every clip and the reference clip."""
    import dataclasses

    from qtts_sweep.model.modeling import ensure_model_folder

    if rows is None:
        rows, _ = read_manifest(cfg.data)
    files = [Path(cfg.data.manifest or "") if cfg.data.format == "jsonl" else Path(cfg.data.root or "")]
    files += [r.audio for r in rows] + [Path(str(r.ref_audio)) for r in rows if getattr(r, "ref_audio", None)]
    if cfg.data.ref_audio not in (None, AUTO):
        files.append(Path(str(cfg.data.ref_audio)))
    stats = []
    for f in sorted({str(Path(x)) for x in files}):
        try:
            st = Path(f).stat()
            stats.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([f, None, None])
    blob = {
        "data": dataclasses.asdict(cfg.data),
        "tokenizer": tokenizer_identity(ensure_model_folder(cfg.model)),
        "files": stats,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_prepared(cfg: Config) -> PreparedDataset | None:
    """The prepared folder of `cfg.data`, read back without re-checking any clip, or None when there is none or
    it no longer matches the configured data (fingerprint) or its own recorded hash."""
    folder = Path(cfg.paths.data_dir) / cfg.data.name
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        recorded = (folder / "dataset_hash").read_text(encoding="utf-8").strip()
        if summary.get("fingerprint") != fingerprint(cfg):
            return None
        splits = {s: read_split(folder / f"{s}.jsonl") for s in SPLITS}
    except (OSError, ValueError, ValidationError):
        return None
    rows = [r for split_rows in splits.values() for r in split_rows]
    if not rows:
        return None
    ref_audio = Path(rows[0].ref_audio)
    if _dataset_hash(splits, ref_audio.stem, summary.get("tokenizer", "")) != recorded or not ref_audio.is_file():
        return None
    return PreparedDataset(dir=folder, hash=recorded, splits=splits, ref_audio=ref_audio, summary=summary)


def load_dataset(cfg: Config, progress: bool = False) -> PreparedDataset:
    """The prepared dataset every consumer uses: loaded when prepared and unchanged, else checked and prepared."""
    return load_prepared(cfg) or prepare_dataset(cfg, progress)


def prepare_dataset(cfg: Config, progress: bool = True) -> PreparedDataset:
    """Validate, convert, split and encode the configured dataset (cached); see the module docstring."""
    from qtts_sweep.model.modeling import ensure_model_folder

    data = cfg.data
    runs = Path(cfg.paths.runs_dir)
    info_dir = runs / "cache" / "audio_info"
    rows, problems = read_manifest(data)
    infos, row_problems = _check_rows(rows, data, info_dir)
    problems += row_problems
    outliers = check_speaker(rows, infos, data, runs / "cache" / "speaker")
    if data.speaker_check == "error":
        problems += [Problem(o.where, round(o.similarity, 3), o.rule(), SPEAKER_FIX) for o in outliers]
        for o in outliers:  # lenient mode skips them like any bad row
            infos.pop(o.where, None)
    ref_path, ref_origin = _reference(rows, data)
    ref_info = None
    if ref_origin == AUTO:
        odd = {o.where for o in outliers}
        picked = _pick_auto([r for r in rows if r.where not in odd], infos, data)
        ref_path, ref_origin = (picked.audio, f"data.ref_audio=auto: {picked.where}") if picked else (None, AUTO)
    if ref_path is None or not ref_path.is_file():
        problems.append(
            Problem(
                ref_origin,
                str(ref_path),
                "reference clip does not exist",
                "set data.ref_audio to one clean clip of the speaker",
            )
        )
    else:
        ref_info = _info_cached(ref_path, info_dir)
        problems += audio_problems(ref_info, ref_origin, ref_path.name, data)
    ref_ok = ref_info is not None and not audio_problems(ref_info, "", "", data)
    if problems and (data.strict or not ref_ok):
        raise DataError(problems, f"dataset `{data.name}` ({len(rows)} readable rows)")
    good = [r for r in rows if r.where in infos]
    if not good:
        raise DataError(problems or [Problem(data.name, 0, "has no rows", "add rows to the manifest")])

    out_dir = Path(cfg.paths.data_dir) / data.name
    audio_dir = out_dir / "audio"
    for row in good:
        dest = audio_dir / f"{infos[row.where].sha256}.wav"
        if not dest.is_file():
            write_wav_24k(dest, to_24k_mono(row.audio))
    ref_dest = audio_dir / f"{ref_info.sha256}.wav"
    if not ref_dest.is_file():
        write_wav_24k(ref_dest, to_24k_mono(ref_path))

    try:
        split_of = rows_by_split(good, data)
    except SplitTooSmall as exc:
        raise DataError(
            [Problem("data.split", len(good), str(exc), "add lines, or lower data.split.min_val / data.split.min_test")]
        ) from exc

    source = ensure_model_folder(cfg.model)
    tok_id = tokenizer_identity(source)
    cache = CodeCache(runs / "cache" / "codes", tok_id)
    items = [(infos[r.where].sha256, audio_dir / f"{infos[r.where].sha256}.wav") for r in good]
    tqdm = None
    if progress:
        from tqdm import tqdm
    encoded = encode_missing(items, cache, source, cfg.model.device, data.codec_batch_size, tqdm)

    splits: dict[str, list[PreparedRow]] = {s: [] for s in SPLITS}
    for row in good:
        info = infos[row.where]
        splits[split_of[row.id]].append(
            PreparedRow(
                id=row.id,
                text=row.text,
                language=row.language,
                audio=str(audio_dir / f"{info.sha256}.wav"),
                audio_sha256=info.sha256,
                duration_s=round(info.duration_s, 4),
                ref_audio=str(ref_dest),
                source=row.where,
                audio_codes=cache.get(info.sha256).tolist(),
            )
        )
    ds_hash = _dataset_hash(splits, ref_info.sha256, tok_id)
    summary = {
        "name": data.name,
        "hash": ds_hash,
        "rows": len(rows),
        "kept": len(good),
        "skipped": [str(p) for p in problems],
        "splits": {s: len(v) for s, v in splits.items()},
        "resampled": sum(1 for r in good if infos[r.where].sample_rate != TARGET_SR),
        "downmixed": sum(1 for r in good if infos[r.where].channels > 1),
        "hours": round(sum(infos[r.where].duration_s for r in good) / 3600, 4),
        "encoded": encoded,
        "codes_cached": len(good) - encoded,
        "tokenizer": tok_id,
        "reference": str(ref_path),
        "reference_from": ref_origin,
        "speaker_outliers": [str(o) for o in outliers] if data.speaker_check == "warn" else [],
        "fingerprint": fingerprint(cfg, rows),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, split_rows in splits.items():
        write_split(out_dir / f"{split}.jsonl", split_rows)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out_dir / "dataset_hash", ds_hash + "\n")
    return PreparedDataset(dir=out_dir, hash=ds_hash, splits=splits, ref_audio=ref_dest, summary=summary)


def format_summary(ds: PreparedDataset) -> str:
    s = ds.summary
    lines = [
        f"dataset `{s['name']}` prepared in {ds.dir}",
        f"  rows: {s['kept']} kept of {s['rows']}  ({s['hours'] * 60:.1f} min of audio)",
        f"  splits: train {s['splits']['train']}, val {s['splits']['val']}, test {s['splits']['test']}",
        f"  resampled to 24 kHz: {s['resampled']}, downmixed to mono: {s['downmixed']}",
        f"  codec codes: {s['encoded']} encoded, {s['codes_cached']} from cache (tokenizer {s['tokenizer']})",
        f"  reference clip: {s['reference']} ({s.get('reference_from', 'data.ref_audio')})",
        f"  content hash: {ds.hash}",
    ]
    if s.get("speaker_outliers"):
        lines.append(f"  warning: {len(s['speaker_outliers'])} clip(s) may be another speaker ({SPEAKER_FIX}):")
        lines += [f"    - {o}" for o in s["speaker_outliers"]]
    if s["skipped"]:
        lines.append(f"  skipped {len(s['skipped'])} problem row(s) (lenient mode):")
        lines += [f"    - {p}" for p in s["skipped"]]
    return "\n".join(lines)
