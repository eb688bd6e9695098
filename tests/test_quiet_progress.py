"""Quiet output and readable sweep progress: the plain (non-TTY) progress lines on a real Optuna study, the
import-time banners kept out of normal output, and the demo-equivalent through the CLI with and without `-v`."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys

import optuna
import pytest
import yaml

from qtts_sweep.sweep.progress import SweepProgress, format_duration
from qtts_sweep.util import quiet
from tests.helpers.sweeps import CHEAP, PROJECT_DIR

BANNERS = ("Warning", "********", "SoX could not be found", "sox: not found", "Traceback", "pad_token_id")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_progress_prints_one_line_per_trial_with_counts_best_and_time_left(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    done_before = study.ask()
    study.tell(done_before, 0.1)  # finished by an earlier run: counted, but not in the rate
    out, clock = io.StringIO(), Clock()
    progress = SweepProgress(5, stream=out, live=False, clock=clock)
    progress.attach(study)
    outcomes = [0.5, "pruned", "failed", 0.3]
    for outcome in outcomes:
        trial = study.ask()
        progress.trial_started(trial.number, 4)
        progress.message(("epoch", 1, {"val_loss": 1.0}, False, "key"))
        assert progress.running[trial.number] == "training epoch 1/4"
        progress.message(("phase", "synthesis and scoring"))
        clock.t += 10.0
        if outcome == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, outcome)
        progress.trial_finished(trial.number)
    lines = out.getvalue().splitlines()
    best = "best 0.5000 (trial 1)"
    assert lines == [
        f"[2/5] trial 1 complete 0.5000 | 2 complete, 0 pruned, 0 failed | {best} | 10s elapsed, ~30s left",
        f"[3/5] trial 2 pruned | 2 complete, 1 pruned, 0 failed | {best} | 20s elapsed, ~20s left",
        f"[4/5] trial 3 failed | 2 complete, 1 pruned, 1 failed | {best} | 30s elapsed, ~10s left",
        f"[5/5] trial 4 complete 0.3000 | 3 complete, 1 pruned, 1 failed | {best} | 40s elapsed, ~0s left",
    ]


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_banner_imports_are_silenced_unless_verbose(tmp_path):
    """qwen-tts prints banners at import: flash-attn's, and sox's shell probe when sox is not on PATH (a PATH
    holding only `sh` makes sure of that). Quiet mode keeps both out; sox's absence becomes one line of ours
    when the one qwen-tts part that uses sox is built; -v shows the library's own output."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").symlink_to(shutil.which("sh"))
    code = (
        "from qtts_sweep.util import quiet; quiet.setup(); import qwen_tts; print('imported', flush=True)\n"
        "from qwen_tts.core.tokenizer_25hz.vq.speech_vq import XVectorExtractor\n"
        "try:\n    XVectorExtractor('/nonexistent.onnx')\nexcept Exception:\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "PATH": str(tmp_path / "bin")}
    env.pop("QTTS_VERBOSE", None)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout == "imported\n"
    assert run.stderr == f"note: {quiet.SOX_NOTE}\n"
    env["QTTS_VERBOSE"] = "1"
    loud = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "SoX could not be found" in loud.stderr and "sox: not found" in loud.stderr
    if importlib.util.find_spec("flash_attn") is None:
        assert "Warning: flash-attn is not installed" in loud.stdout


def _cli(args: list[str], runs_dir) -> str:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "QTTS_RUNS_DIR": str(runs_dir)}
    env.pop("QTTS_VERBOSE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "qtts_sweep.cli", *args], env=env, capture_output=True, text=True, cwd=PROJECT_DIR
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_a_short_sweep_and_promote_print_only_our_lines_and_verbose_brings_the_rest_back(tiny_model_dir, tmp_path):
    spec = yaml.safe_load((PROJECT_DIR / "sweeps" / "tiny.yaml").read_text())
    spec.update(study_name="quiet_demo", n_trials=2, enqueue=[], space={
        "train.lr": {"type": "categorical", "choices": [3.0e-3]},
        "eval.epoch": {"type": "int", "low": 1, "high": 2},
        "eval.lora_scale": {"type": "float", "low": 0.2, "high": 1.0, "step": 0.4},
    })  # fmt: skip
    sweep_file = tmp_path / "quiet_demo.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    overrides = [*CHEAP, f"paths.models_dir={tiny_model_dir.parent}"]
    runs = tmp_path / "runs"
    # the README's way to bring your own configs: a folder with the group layout, passed as --config-dir
    mine = tmp_path / "myconf" / "data"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text((PROJECT_DIR / "conf" / "data" / "demo.yaml").read_text())

    out = _cli(["sweep", str(sweep_file), "data=mine", "--config-dir", str(mine.parent), *overrides], runs)
    out += _cli(["promote", "quiet_demo", "experiment=tiny_demo", "production.stress.lines=2", *overrides], runs)
    for banner in BANNERS:
        assert banner not in out, f"{banner!r} in quiet output:\n{out}"
    assert "[1/2] trial 0 " in out and "[2/2] trial 1 " in out, out
    assert "elapsed" in out and "best " in out

    # Resuming the finished study runs no trial, but opens the storage and starts the worker: the library
    # warnings (Optuna's ExperimentalWarning for heartbeats at least) are back with -v.
    loud = _cli(["-v", "sweep", str(sweep_file), *overrides], runs)
    assert "Warning" in loud, loud
