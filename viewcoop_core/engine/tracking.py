"""MLflow run handling for rank 0 (and the driver), through ``MlflowClient`` only.

No global ``mlflow.start_run`` state: a worker process may host several things, and a
resumed training must continue the very run it started (its id travels in checkpoints).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from viewcoop_core.engine.results import HISTORY_COLUMNS

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "viewcoop.run_name"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LEN = 6000


def default_tracking_uri(storage_path: str | os.PathLike) -> str:
    """SQLite next to the runs (MLflow 3 refuses a plain folder store)."""
    return f"sqlite:///{Path(storage_path).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None, storage_path: str | os.PathLike) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(storage_path)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """Id of experiment ``name``, created (with artifacts under ``artifact_root``) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if artifact_root is None else Path(artifact_root).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it between the two calls
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class RunTracker:
    """One MLflow run: created fresh, or continued when ``run_id`` is given."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        artifact_root: str | None = None,
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            logger.info("continuing MLflow run %s", run_id)
            return
        experiment_id = ensure_experiment(self.client, experiment, artifact_root)
        tags = {RUN_NAME_TAG: run_name}
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        self.run_id = self.client.create_run(
            experiment_id, run_name=run_name, tags=tags
        ).info.run_id
        logger.info(
            "MLflow run %s (%s) in experiment %r at %s",
            self.run_id,
            run_name,
            experiment,
            tracking_uri,
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = _now_ms()
        items = [
            Metric(k, float(v), timestamp, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which metric ``key`` has been logged in this run."""
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, str(v)[:MAX_PARAM_LEN]) for k, v in tags.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[start : start + 100])

    def tags(self, prefix: str = "") -> dict[str, str]:
        """The run's tags whose key starts with ``prefix``, the prefix removed."""
        tags = self.client.get_run(self.run_id).data.tags
        return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}

    def finish(self, failed: bool = False) -> None:
        status = RunStatus.FAILED if failed else RunStatus.FINISHED
        self.client.set_terminated(self.run_id, status=RunStatus.to_string(status))


def _now_ms() -> int:
    return int(time.time() * 1000)


def metric_history(
    tracking_uri: str, run_id: str, columns: tuple[str, ...] = HISTORY_COLUMNS
) -> list[dict[str, float]]:
    """One row per evaluated epoch: {"epoch", mAP, R1, R5, R10, cluster counts, ARI}."""
    client = MlflowClient(tracking_uri)
    rows: dict[int, dict[str, float]] = {}
    for key in columns:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
    return [rows[e] for e in sorted(rows) if "mAP" in rows[e]]
