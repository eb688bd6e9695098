"""Generate the committed demo dataset in ``data/demo/`` with espeak-ng.

Synthesises 80 short single-speaker English utterances plus one reference
clip, stores them as 16-bit mono FLAC at espeak-ng's native 22050 Hz (no
resampling), and writes ``manifest.jsonl`` and ``README.md``. Output is
deterministic; ``--check`` regenerates into a temp dir and compares bytes.

Usage: python scripts/make_demo_data.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "demo"
VOICE, SPEED, PITCH = "en-us", 165, 50
ESPEAK_CMD = ["espeak-ng", "-v", VOICE, "-s", str(SPEED), "-p", str(PITCH)]
SAMPLE_RATE = 22050
MIN_DUR, MAX_DUR = 1.0, 4.0
REF_TEXT = "This is the reference voice, speaking clearly at a steady pace."

SENTENCES: list[str] = [
    "The kettle is boiling.",
    "Please close the window before you leave.",
    "We walked along the river until sunset.",
    "Could you pass the salt, please?",
    "My brother plays the violin.",
    "The train leaves at nine.",
    "She painted the fence green.",
    "Rain is expected this afternoon.",
    "He forgot his umbrella again.",
    "The library opens early.",
    "Our neighbors adopted a grey cat.",
    "I'd rather stay home tonight.",
    "Fresh bread every morning.",
    "Turn left at the light.",
    "Where are the car keys?",
    "The meeting moved to Thursday.",
    "A cold wind blew across the harbor.",
    "They built a treehouse.",
    "Seal the envelope.",
    "The children laughed at the clumsy puppy.",
    "Apples, pears, and plums filled the basket.",
    "Nobody expected the concert to sell out.",
    "The lamp flickered and went dark.",
    "Write your name at the top.",
    "The museum has a new exhibit.",
    "We ran out of milk.",
    "His handwriting is neat.",
    "The garden looks lovely.",
    'She said "thank you" and smiled.',
    "Bring a jacket, just in case.",
    "The printer is broken.",
    "Dinner is almost ready.",
    "The old bridge creaked under the truck.",
    "Let's meet outside the cinema.",
    "Swallows nest under the roof.",
    "The soup needs pepper.",
    "He jogged around the park.",
    "The baby fell asleep.",
    "Our flight was delayed by two hours.",
    "Coffee tastes better with cinnamon.",
    "Keep the receipt.",
    "Thunder rolled over the hills.",
    "The shop on the corner sells antiques.",
    "Why is the sky so orange tonight?",
    "She planted tulips along the path.",
    "The hallway clock runs fast.",
    "Measure twice, cut once.",
    "The fishermen returned before dawn.",
    "I left my glasses on the table.",
    "The bus was crowded.",
    "Snow covered the village overnight.",
    "He whistled while washing dishes.",
    "The students listened carefully.",
    "Our team won the final.",
    "The candle smelled of vanilla.",
    "Water the plants on Monday.",
    "The restaurant was closed for repairs.",
    "A small boat drifted toward the shore.",
    "The teacher's voice echoed down the corridor.",
    "Please speak more slowly.",
    "The map was torn.",
    "Bees buzzed around the lavender.",
    "If it rains tomorrow, we will stay in and play cards.",
    "We watched the stars from the roof.",
    "The recipe needs three eggs.",
    "My grandmother knits scarves for everyone.",
    "The parcel arrived early.",
    "Lock the door when you go out.",
    "The owl hooted softly.",
    "Her battery died during the call.",
    "Waves crashed against the rocks.",
    "He read the paper over breakfast.",
    "Is that your dog?",
    "Wet paint, so please don't touch.",
    "The farmer sold pumpkins at the market.",
    "The hike took longer than we planned, but nobody complained.",
    "The choir sang on Sunday.",
    "A fox slipped through the hedge.",
    "Leave the books on the shelf.",
    "Good morning, everyone.",
]


def synthesize(text: str, wav_path: Path) -> None:
    """Render ``text`` to a WAV file with the fixed espeak-ng voice."""
    cmd = [*ESPEAK_CMD, "-w", str(wav_path), text]
    subprocess.run(cmd, check=True, capture_output=True)


def wav_to_flac(wav_path: Path, flac_path: Path) -> float:
    """Convert espeak's WAV to 16-bit mono FLAC; return duration in seconds."""
    data, sr = sf.read(wav_path, dtype="int16")
    if sr != SAMPLE_RATE or data.ndim != 1:
        raise RuntimeError(f"unexpected espeak output: sr={sr}, shape={data.shape}")
    flac_path.parent.mkdir(parents=True, exist_ok=True)
    # compression_level=1.0 is FLAC level 8: smallest files, still lossless.
    sf.write(flac_path, data, sr, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return len(data) / sr


def render(text: str, flac_path: Path, tmp: Path) -> float:
    wav_path = tmp / "out.wav"
    synthesize(text, wav_path)
    return wav_to_flac(wav_path, flac_path)


def validate_sentences() -> None:
    seen: set[str] = set()
    for s in SENTENCES + [REF_TEXT]:
        key = "".join(c for c in s.lower() if c.isalnum() or c.isspace()).strip()
        if key in seen:
            raise ValueError(f"duplicate sentence: {s!r}")
        seen.add(key)
        if not s.isascii():
            raise ValueError(f"non-ASCII sentence: {s!r}")
        if not 3 <= len(s.split()) <= 11:
            raise ValueError(f"sentence must have 3-11 words: {s!r}")
    if len(SENTENCES) != 80:
        raise ValueError(f"expected 80 sentences, got {len(SENTENCES)}")


def readme_text(total: float, lo: float, hi: float) -> str:
    return (
        "# Demo dataset\n\n"
        "Synthetic single-speaker English speech with exact transcripts, for\n"
        "smoke-testing the sweep pipeline. Generated by:\n\n"
        "    python scripts/make_demo_data.py\n\n"
        f"- Voice: espeak-ng `{VOICE}`, speed {SPEED}, pitch {PITCH}\n"
        f"- Audio: FLAC, mono, 16-bit, {SAMPLE_RATE} Hz (native rate, not resampled)\n"
        f"- Utterances: {len(SENTENCES)} ({lo:.2f}-{hi:.2f} s each), "
        f"total {total:.1f} s; plus `ref/ref.flac` as the speaker reference\n"
        "- Manifest: `manifest.jsonl` (paths relative to this folder)\n\n"
        "Licence: audio is espeak-ng output (GPL-3.0 synthesiser; the output\n"
        "itself carries no restrictions); the sentences were written for this\n"
        "project.\n"
    )


def generate(out: Path) -> None:
    """Write the full dataset into ``out``."""
    validate_sentences()
    rows: list[str] = []
    durations: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ref_dur = render(REF_TEXT, out / "ref" / "ref.flac", tmp)
        for i, text in enumerate(SENTENCES, start=1):
            uid = f"demo_{i:04d}"
            dur = render(text, out / "wavs" / f"{uid}.flac", tmp)
            if not MIN_DUR <= dur <= MAX_DUR:
                raise ValueError(f"{uid} is {dur:.2f} s, outside [{MIN_DUR}, {MAX_DUR}]: {text!r}")
            durations.append(dur)
            row = {
                "id": uid,
                "audio": f"wavs/{uid}.flac",
                "text": text,
                "ref_audio": "ref/ref.flac",
                "language": "english",
            }
            rows.append(json.dumps(row, ensure_ascii=False))
    (out / "manifest.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme_text(sum(durations), min(durations), max(durations)), encoding="utf-8")
    print(
        f"wrote {len(rows)} clips ({sum(durations):.1f} s, "
        f"{min(durations):.2f}-{max(durations):.2f} s), ref {ref_dur:.2f} s -> {out}"
    )


def list_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def check(out: Path) -> int:
    """Regenerate into a temp dir and report files that differ from ``out``."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        fresh = Path(tmp_dir)
        generate(fresh)
        want, have = list_files(fresh), list_files(out) if out.is_dir() else set()
        bad = sorted(want ^ have)
        bad += sorted(f for f in want & have if not filecmp.cmp(fresh / f, out / f, shallow=False))
    for f in bad:
        print(f"differs: {f}")
    print("check failed" if bad else "check passed: all files identical")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temp dir; exit 1 if anything differs",
    )
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
