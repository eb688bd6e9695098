"""The small protocol training and synthesis report metrics through, so they run with tracking off.

Only `qtts_sweep.tracking.mlflow_tracker` (MLflow) implements it for real; everything else sees a `MetricReporter`.
"""

from __future__ import annotations

from typing import Protocol


class MetricReporter(Protocol):
    def log_params(self, params: dict[str, object]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NullReporter:
    """Tracking off: accepts everything, keeps nothing."""

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


class ListReporter:
    """Keeps every call in memory (tests, and callers that forward metrics later)."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_params(self, params: dict[str, object]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))
