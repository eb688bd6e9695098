"""Where the project's test data is, the cheap trial settings, and small sweeps on the tiny preset."""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEMO_DIR = PROJECT_DIR / "data" / "demo"
# Cheap sweep trials on the tiny preset: two optimizer steps per epoch, two short val lines, no MOS model.
CHEAP = [
    "train.max_steps_per_epoch=2",
    "eval.max_lines=2",
    "eval.batch_size=2",
    "eval.decoding.frames_per_char=0.3",
    "eval.decoding.min_frames=6",
    "eval.metrics.mos=none",
]


def tiny_paths(tmp, tiny_model_dir) -> list[str]:
    """Paths for a run under `tmp` on the session's tiny preset, with the session's one prepared demo dataset: a
    sweep test checks the sweep, not preparing (tests/test_data_prepare.py does, on its own folders). The data folder
    is the session runs/ folder's (conftest `runs_dir`, where `tiny_model_dir` lives too); `load_dataset` reads it
    back while its fingerprint matches and prepares it again (atomically) when a test changes the data config.

    `tmp` also gets a copy of an empty MLflow store migrated once per session (`tmp/mlflow.db`, the default
    tracking URI's file), unless it has one: MLflow's schema migrations of a new SQLite store take ~2 s of every
    sweep test otherwise, and no test is about them."""
    models = Path(tiny_model_dir).parent
    _empty_mlflow_store(Path(tmp), models.parent)
    return [f"paths.runs_dir={tmp}", f"paths.models_dir={models}", f"paths.data_dir={models.parent / 'data'}"]


def _empty_mlflow_store(runs: Path, session_runs: Path) -> None:
    import shutil

    template = session_runs / "mlflow-empty.db"
    if not template.is_file():
        from mlflow import MlflowClient

        building = template.with_suffix(".building")
        building.unlink(missing_ok=True)
        MlflowClient(f"sqlite:///{building}").search_experiments()  # creates and migrates the store
        building.replace(template)
    target = runs / "mlflow.db"
    if not target.exists():
        runs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)


def tiny_sweep(tmp, tiny_model_dir, name: str = "tiny", n_trials: int = 4, extra=(), log=None, **spec_changes):
    """A SweepDriver for `sweeps/<name>.yaml` on the tiny preset, writing under `tmp`."""
    import dataclasses

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.driver import SweepDriver
    from qtts_sweep.sweep.spec import load_spec

    spec = dataclasses.replace(load_spec(name), n_trials=n_trials, **spec_changes)
    base = [*CHEAP, *tiny_paths(tmp, tiny_model_dir), *extra]
    return SweepDriver(spec, lambda ov: load_config(ov), base, log=log or (lambda m: None))


def two_trial_sweep(folder: Path) -> Path:
    """sweeps/tiny.yaml with a budget of 2 (the cheapest sweep that two drivers share)."""
    text = (PROJECT_DIR / "sweeps" / "tiny.yaml").read_text().replace("n_trials: 12", "n_trials: 2")
    assert "n_trials: 2" in text
    path = folder / "tiny2.yaml"
    path.write_text(text)
    return path
