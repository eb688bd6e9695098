"""The MLflow model registry: promoted bundles as model versions, the `production` / `previous` aliases, and
downloading a bundle back (`models:/<name>@production`).

Layout: a promoted bundle is logged to its trial's run (artifact path `bundle`; a run in experiment
`qtts-production` when the trial has none) and registered as a version of model `qtts-<name>`; `production` moves
to it and the version it replaced gets `previous`. Run logging (training, study and trial runs) is
`mlflow_tracker.py`'s.
"""

from __future__ import annotations

from pathlib import Path

from qtts_sweep.config.schema import TrackingConfig
from qtts_sweep.tracking.mlflow_tracker import ensure_experiment
from qtts_sweep.tracking.tracker import NullRegistry, Registry

PRODUCTION_EXPERIMENT = "qtts-production"


class MlflowRegistry:
    """Implements `tracker.Registry` over one `MlflowClient` (checked by a test)."""

    def __init__(self, cfg: TrackingConfig):
        from mlflow import MlflowClient

        self.cfg = cfg
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)

    def register_bundle(self, model: str, bundle: Path, run_id: str | None, tags: dict) -> str:
        """Log the bundle to the trial's run, add a model version, move `production` to it (old one: `previous`)."""
        from mlflow.exceptions import MlflowException

        if run_id is None:
            exp = ensure_experiment(self.client, PRODUCTION_EXPERIMENT, self.cfg.artifact_location)
            run_id = self.client.create_run(exp, run_name=f"bundle-{model}").info.run_id
            self.client.set_terminated(run_id, "FINISHED")
        self.client.log_artifacts(run_id, str(bundle), artifact_path="bundle")
        try:
            self.client.create_registered_model(model)
        except MlflowException:
            pass  # already registered
        version = self.client.create_model_version(model, source=f"runs:/{run_id}/bundle", run_id=run_id, tags=tags)
        try:
            current = self.client.get_model_version_by_alias(model, "production")
            self.client.set_registered_model_alias(model, "previous", current.version)
        except MlflowException:
            pass  # first promotion
        self.client.set_registered_model_alias(model, "production", version.version)
        return str(version.version)

    def download_bundle(self, uri: str, dst: Path) -> Path:
        """`models:/<name>@production` (or any MLflow artifact URI) -> a local bundle folder."""
        import mlflow

        mlflow.set_tracking_uri(self.cfg.tracking_uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def make_registry(cfg: TrackingConfig) -> Registry:
    return MlflowRegistry(cfg) if cfg.backend == "mlflow" else NullRegistry()
