"""MLflow run logging: training runs per training key; a parent run per study; a child run per trial.

Layout in the tracking store:
- experiment `tracking.training_experiment` (shared by every study, since a training key outlives any one study):
  one run per training key (tag `training_key`), per-epoch train/val curves, each epoch's adapter logged once;
- experiment `qtts-study-<study>`: a parent run (tag `optuna_study`) and one child run per Optuna trial (tag
  `optuna_trial_number`) with params, every metric component, the objective, the wavs, a per-line table and
  links to its training run and checkpoint. The Optuna trial holds `mlflow_run_id` (both ways linked).

The protocols every caller sees, and the tracker and registry that do nothing (tracking.backend=none), are in
`tracker.py`; the model registry (promoted bundles) is `registry.py`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import TrackingConfig
from qtts_sweep.tracking.tracker import NullTracker, Tracker
from qtts_sweep.util.urls import redact

STUDY_PREFIX = "qtts-study-"
# MLflow 3.x's UI opens experiments in its GenAI (traces) view. The experiment tag below (values of the UI's
# ExperimentKind enum: genai_development, custom_model_development, finetuning, ...) marks ours as model training;
# MLflow 3.17 reads it only where its GenAI / Model-training switch is off. With the switch on (3.17's default) the
# view is the switch's, default GenAI, and the URL parameter `workflowType=machine_learning` sets it: every MLflow
# link this project prints carries it (docs/design.md, "Dashboards").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_PATH = "#/experiments?workflowType=machine_learning"  # the experiment list, in the model-training view
# How often a trial run samples CPU / memory / disk / network (and GPU when pynvml is importable); MLflow's own
# default is 10 s. The environment variable MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it.
SYSTEM_METRICS_INTERVAL_S = 5.0


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_location/name`) when missing, tagged as model
    training either way (EXPERIMENT_KIND_TAG above).

    Drivers that start together call this at the same moment on one store (tests/test_tracking_race.py): a new
    experiment is created with its tag in one call, and a tag write that loses a race (MLflow's store inserts the
    tag row: a second insert of the same key fails with a UNIQUE constraint error) counts as done when the tag is
    there afterwards."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        loc = Path(artifact_location, name).resolve().as_uri() if artifact_location else None
        try:
            return client.create_experiment(name, artifact_location=loc, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # another driver created it a moment ago
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # an experiment from before the tag existed
        try:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except MlflowException:  # another driver tagged it at the same moment
            if client.get_experiment(exp.experiment_id).tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                raise
    return exp.experiment_id


class MlflowTracker:
    """Run logging in MLflow: one short method per thing logged (training run, parent run, trial run), over one
    `MlflowClient`; implements `tracker.Tracker` (checked by a test). The model registry is `registry.py`'s."""

    enabled = True

    def __init__(self, cfg: TrackingConfig):
        from mlflow import MlflowClient

        self.cfg = cfg
        if cfg.tracking_uri.startswith("sqlite:///"):
            Path(cfg.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        self._experiments: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = ensure_experiment(self.client, name, self.cfg.artifact_location)
        return self._experiments[name]

    def _find(self, experiment: str, tag: str, value: str, extra: str = "") -> Any | None:
        runs = self.client.search_runs([self._experiment(experiment)], f"tags.{tag} = '{value}'{extra}", max_results=1)
        return runs[0] if runs else None

    # --- training runs -------------------------------------------------------------------------------------
    def training_run(self, key: str, material: dict) -> str:
        name = self.cfg.training_experiment
        found = self._find(name, "training_key", key)
        if found:
            return found.info.run_id
        run = self.client.create_run(self._experiment(name), run_name=f"train-{key[:10]}", tags={"training_key": key})
        params = {f"cfg.{k}": str(v)[:500] for k, v in material["config"].items()}
        params.update(
            {"dataset_hash": material["dataset_hash"], "model": material["model"], "source": material["source"]}
        )
        params.update({f"version.{k}": v for k, v in material["versions"].items()})
        self._log_params(run.info.run_id, params)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def log_training_epoch(self, run_id: str | None, epoch: int, metrics: dict, adapter: Path | None) -> None:
        """One epoch's metrics, and its adapter file (given by the store) under the artifact folder of the epoch's
        checkpoint name."""
        if run_id is None:
            return
        run = self.client.get_run(run_id)
        logged = set(json.loads(run.data.tags.get("logged_epochs", "[]")))
        if epoch in logged:
            return
        from mlflow.entities import Metric

        now = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, epoch) for k, v in _finite(metrics).items()])
        if adapter is not None and Path(adapter).is_file():
            self.client.log_artifact(run_id, str(adapter), artifact_path=Path(adapter).parent.name)
        self.client.set_tag(run_id, "logged_epochs", json.dumps(sorted(logged | {epoch})))

    # --- studies and trials --------------------------------------------------------------------------------
    def study_parent(self, study: str, description: dict) -> str:
        exp = STUDY_PREFIX + study
        found = self._find(exp, "optuna_study", study, " and tags.qtts_role = 'parent'")
        if found:
            return found.info.run_id
        run = self.client.create_run(
            self._experiment(exp), run_name=f"study-{study}", tags={"optuna_study": study, "qtts_role": "parent"}
        )
        self._log_params(run.info.run_id, {k: str(v)[:500] for k, v in description.items()})
        return run.info.run_id

    def start_trial(self, parent: str | None, study: str, number: int, params: dict) -> str:
        tags = {"optuna_study": study, "optuna_trial_number": str(number), "qtts_role": "trial"}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self._experiment(STUDY_PREFIX + study), run_name=f"trial-{number}", tags=tags)
        self._log_params(run.info.run_id, {k: str(v) for k, v in params.items()})
        self._start_system_metrics(run.info.run_id)
        return run.info.run_id

    def _start_system_metrics(self, run_id: str) -> None:
        """System metrics (`system/*`: CPU, memory, disk, network; GPU with pynvml) on the trial's run while it
        trains and synthesizes, through MLflow's own `SystemMetricsMonitor` on that run id (no fluent active run,
        so nothing thread-global). Needs psutil; without it nothing is logged. One trial at a time per tracker."""
        import importlib.util

        if importlib.util.find_spec("psutil") is None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._stop_system_metrics(None)  # a previous trial's, if it was never finished
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=self.cfg.tracking_uri
        )
        monitor.start()
        self._monitor = (run_id, monitor)

    def _stop_system_metrics(self, run_id: str | None) -> None:
        """Stop the monitor and log the samples of its last, unfinished window. MLflow's monitor drops them on
        shutdown, so a trial shorter than one sampling interval would otherwise carry no system metrics at all."""
        current = getattr(self, "_monitor", None)
        if current is None or run_id not in (None, current[0]):
            return
        self._monitor = None
        monitor = current[1]
        monitor.finish()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

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
        """status: FINISHED (complete), KILLED (pruned or interrupted) or FAILED."""
        if run_id is None:
            return
        from mlflow.entities import Metric

        now = _now_ms()
        batch = [Metric(k, v, now, 0) for k, v in _finite(metrics or {}).items()]
        for step, m in (steps or {}).items():
            batch += [Metric(f"epoch_{k}", v, now, int(step)) for k, v in _finite(m).items()]
        for i in range(0, len(batch), 900):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=batch[i : i + 900])
        if params:
            self._log_params(run_id, {k: str(v)[:500] for k, v in params.items()})
        for k, v in (tags or {}).items():
            self.client.set_tag(run_id, k, str(v)[:5000])
        if artifacts is not None and Path(artifacts).is_dir():
            self.client.log_artifacts(run_id, str(Path(artifacts) / "wavs"), artifact_path="wavs")
        if table:
            self.client.log_table(run_id, data=_columns(table), artifact_file="lines.json")
        self._stop_system_metrics(run_id)
        self.client.set_terminated(run_id, status)

    def fail_orphans(self, study: str, keep: set[str]) -> int:
        """Runs of this study left RUNNING by a killed driver: mark them FAILED (tag the reason)."""
        exp = self._experiment(STUDY_PREFIX + study)
        n = 0
        for run in self.client.search_runs([exp], "attributes.status = 'RUNNING'", max_results=1000):
            if run.info.run_id in keep or run.data.tags.get("qtts_role") == "parent":
                continue
            self.client.set_tag(run.info.run_id, "fail_reason", "driver process died; trial failed and re-queued")
            self.client.set_terminated(run.info.run_id, "FAILED")
            n += 1
        return n

    def finish_parent(self, parent: str | None) -> None:
        """A sweep that ran to its end leaves its parent run FINISHED (a resumed sweep logs into it again)."""
        if parent:
            self.client.set_terminated(parent, "FINISHED")

    def log_parent_artifacts(self, parent: str | None, folder: Path) -> None:
        if parent and Path(folder).is_dir():
            self.client.log_artifacts(parent, str(folder))

    def log_parent_metrics(self, parent: str | None, metrics: dict[str, float]) -> None:
        """Study-level numbers on the parent run (e.g. the winner's lead intervals)."""
        if parent:
            from mlflow.entities import Metric

            now = _now_ms()
            self.client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in _finite(metrics).items()])

    def ui_command(self) -> str:
        if self.cfg.tracking_uri.startswith(("http://", "https://")):
            return f"open {redact(self.cfg.tracking_uri).rstrip('/')}/{UI_PATH}"
        return (
            f"mlflow ui --backend-store-uri {redact(self.cfg.tracking_uri)} --host 127.0.0.1 --port 5000"
            f"   # then open http://127.0.0.1:5000/{UI_PATH}"
        )

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 90):  # MLflow caps params per batch at 100
            self.client.log_batch(run_id, params=fresh[i : i + 90])


def _columns(rows: list[dict]) -> dict[str, list]:
    """Per-line rows -> column dict for `log_table` (metrics flattened)."""
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("metrics", "codes")}
        row.update({k: v for k, v in (r.get("metrics") or {}).items()})
        flat.append(row)
    keys = sorted({k for r in flat for k in r})
    return {k: [r.get(k) for r in flat] for k in keys}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def make_tracker(cfg: TrackingConfig) -> Tracker:
    return MlflowTracker(cfg) if cfg.backend == "mlflow" else NullTracker()
