"""The sweep's MLflow parent run and its children (one per grid point)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from orchestrator.config import flatten
from orchestrator.sweep.grid import format_value
from orchestrator.sweep.report import SummaryRow
from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.tracking import PARENT_TAG, RUN_NAME_TAG, RunTracker

logger = logging.getLogger(__name__)

PARENT_RUN_FILE = "parent_run.json"
SWEEP_TAG = "viewcoop.sweep"


def open_parent_run(
    sweep_dir: Path,
    tracking_uri: str,
    experiment: str,
    name: str,
    artifact_root: str,
    params: Mapping[str, Any],
):
    """The sweep's MLflow parent run: the one in ``parent_run.json`` when there is one
    (a resumed sweep), else a new run with ``params``, recorded there."""

    record = sweep_dir / PARENT_RUN_FILE
    if record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        return RunTracker(tracking_uri, experiment, name, run_id=run_id)
    tracker = RunTracker(tracking_uri, experiment, name, artifact_root=artifact_root)
    tracker.set_tag(SWEEP_TAG, name)
    tracker.log_params(params)
    record.write_text(
        json.dumps(
            {"run_id": tracker.run_id, "tracking_uri": tracking_uri, "experiment": experiment}
        )
    )
    return tracker


def parent_params(spec: Mapping[str, Any], base: ExperimentConfig) -> dict[str, Any]:
    params = flatten(base.to_dict())
    params["sweep.name"] = spec["name"]
    params["sweep.config"] = spec["config"]
    params["sweep.profile"] = spec["profile"]
    params["sweep.num_points"] = len(spec["grid"])
    for point in spec["grid"]:
        params[f"sweep.point.{point['slug']}"] = ", ".join(
            f"{k}={format_value(v)}" for k, v in point["overrides"].items()
        )
    return params


def child_runs(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Run name -> id of the parent's newest child run of that name.

    A trial interrupted before its first checkpoint starts a new MLflow run when it is
    resumed; the older run of that name was left RUNNING by the killed worker and is
    closed here as KILLED.
    """

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    newest: dict[str, Any] = {}
    for run in runs:
        run_name = run.data.tags.get(RUN_NAME_TAG, run.info.run_name)
        stale = newest.get(run_name)
        if stale is not None and stale.info.status == RunStatus.to_string(RunStatus.RUNNING):
            logger.warning(
                "closing MLflow run %s of %s, superseded by %s",
                stale.info.run_id,
                run_name,
                run.info.run_id,
            )
            client.set_terminated(stale.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        newest[run_name] = run
    return {run_name: run.info.run_id for run_name, run in newest.items()}


def log_best(parent: Any, rows: Sequence[SummaryRow]) -> None:
    """The best point's figures as parent metrics (percent), for the MLflow runs list."""
    best = next((row for row in rows if row.best), None)
    if best is not None:
        parent.log_metrics(
            {f"best_{k}": v for k, v in best.metrics.items() if v is not None}, step=best.epochs
        )
        parent.set_tag("viewcoop.best_point", best.point.name)
