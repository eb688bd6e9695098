"""What training, sweeps and promotion record through: the `Tracker` protocol (run logging) and the `Registry`
protocol (promoted bundles), with `NullTracker` / `NullRegistry` for tracking off.

The MLflow implementations are `mlflow_tracker.MlflowTracker` and `registry.MlflowRegistry` (only tracking/
imports mlflow). Callers get them from `mlflow_tracker.make_tracker` / `registry.make_registry` and never see
which one it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """Every run the package logs outside Optuna: training runs, a parent run per study, a run per trial. Each
    method takes and returns plain values (run ids, paths, dicts). The model registry is `Registry`."""

    enabled: bool

    def training_run(self, key: str, material: dict) -> str | None: ...

    def log_training_epoch(self, run_id: str | None, epoch: int, metrics: dict, adapter: Path | None) -> None: ...

    def study_parent(self, study: str, description: dict) -> str | None: ...

    def start_trial(self, parent: str | None, study: str, number: int, params: dict) -> str | None: ...

    def finish_trial(
        self,
        run_id: str | None,
        status: str,
        metrics: dict | None = None,
        params: dict | None = None,
        tags: dict | None = None,
        artifacts: Path | None = None,
        table: list[dict] | None = None,
        steps: dict[int, dict] | None = None,
    ) -> None: ...

    def fail_orphans(self, study: str, keep: set[str]) -> int: ...

    def finish_parent(self, parent: str | None) -> None: ...

    def log_parent_artifacts(self, parent: str | None, folder: Path) -> None: ...

    def log_parent_metrics(self, parent: str | None, metrics: dict[str, float]) -> None: ...

    def ui_command(self) -> str: ...


@runtime_checkable
class Registry(Protocol):
    """The model registry: promoted bundles as model versions with the `production` / `previous` aliases."""

    def register_bundle(self, model: str, bundle: Path, run_id: str | None, tags: dict) -> str | None: ...

    def download_bundle(self, uri: str, dst: Path) -> Path: ...


class NullTracker:
    """Tracking off (tracking.backend=none): accepts everything, keeps nothing."""

    enabled = False

    def training_run(self, key: str, material: dict) -> str | None:
        return None

    def log_training_epoch(self, run_id: str | None, epoch: int, metrics: dict, adapter: Path | None) -> None:
        pass

    def study_parent(self, study: str, description: dict) -> str | None:
        return None

    def start_trial(self, parent: str | None, study: str, number: int, params: dict) -> str | None:
        return None

    def finish_trial(
        self,
        run_id: str | None,
        status: str,
        metrics: dict | None = None,
        params: dict | None = None,
        tags: dict | None = None,
        artifacts: Path | None = None,
        table: list[dict] | None = None,
        steps: dict[int, dict] | None = None,
    ) -> None:
        pass

    def fail_orphans(self, study: str, keep: set[str]) -> int:
        return 0

    def finish_parent(self, parent: str | None) -> None:
        pass

    def log_parent_artifacts(self, parent: str | None, folder: Path) -> None:
        pass

    def log_parent_metrics(self, parent: str | None, metrics: dict[str, float]) -> None:
        pass

    def ui_command(self) -> str:
        return "(tracking is off: tracking.backend=none)"


class NullRegistry:
    """Tracking off: nothing is registered, and a registry URI cannot be resolved."""

    def register_bundle(self, model: str, bundle: Path, run_id: str | None, tags: dict) -> str | None:
        return None

    def download_bundle(self, uri: str, dst: Path) -> Path:
        raise ValueError(f"{uri}: tracking is off (tracking.backend=none), the model registry is not available")
