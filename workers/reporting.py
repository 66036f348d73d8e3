"""What a worker reports each epoch: the checkpoint (rank 0), Ray Train's report (every
rank) and the MLflow metrics (rank 0), each epoch's metrics logged exactly once.

Order matters for exactly-once: the checkpoint is persisted by ``ray.train.report``
first, then the metrics go to MLflow. A worker killed in between leaves a checkpoint
whose metrics MLflow lacks; the checkpoint carries them, and the resumed run logs them
(``log_checkpointed_metrics``). A worker killed before the report leaves neither, and
the epoch is redone.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.checkpoint import rng_state, save_checkpoint
from viewcoop_core.engine.environment import (
    TAG_PREFIX,
    environment_changes,
    environment_tags,
    software_environment,
)
from viewcoop_core.engine.results import history_markdown
from viewcoop_core.engine.tracking import RunTracker, metric_history
from viewcoop_core.figures.runs import make_figures

logger = logging.getLogger(__name__)

STOPPED_FILE = "stopped.json"
EPOCH_KEY = "epoch"


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, np.floating, np.integer))
    }


def checkpoint_state(
    core: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    labels: torch.Tensor | None,
    cfg: ExperimentConfig,
    metrics: dict[str, float],
) -> dict[str, Any]:
    return {
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "rng": rng_state(),
        "y_img": None if labels is None else labels,
        "metrics": metrics,
    }


class Reporter:
    """Rank 0 holds the MLflow run (created by the driver) and writes checkpoints; every
    rank calls ``report`` so Ray Train's reports stay in step."""

    def __init__(self, rank: int, config: dict[str, Any]):
        self.rank = rank
        self.run_dir = Path(config["run_dir"])
        self.tracker = None
        if rank == 0:
            mlflow = config["mlflow"]
            self.tracker = RunTracker(
                mlflow["tracking_uri"], mlflow["experiment"], config["run_name"], mlflow["run_id"]
            )
            self.record_environment()

    def record_environment(self) -> None:
        """Rank 0: the machine and software stack as ``env.*`` tags, those of the run's first
        start kept; a resume on another machine or stack is logged with what changed."""
        current = software_environment()
        recorded = self.tracker.tags(TAG_PREFIX)
        changes = environment_changes(recorded, current)
        if changes:
            logger.warning(
                "the run resumes on another machine or software stack (%s): from here on its "
                "figures can differ from an uninterrupted run's in the last digits",
                "; ".join(changes),
            )
        new = {key: value for key, value in current.items() if key not in recorded}
        self.tracker.set_tags(environment_tags(new))

    def logged(self, step: int, key: str = EPOCH_KEY) -> bool:
        return step in self.tracker.logged_steps(key)

    def log_once(self, metrics: dict[str, float], step: int, key: str = EPOCH_KEY) -> None:
        """Rank 0: log ``metrics`` at ``step`` unless that step's ``key`` is already there."""
        if self.tracker is not None and not self.logged(step, key):
            self.tracker.log_metrics(metrics, step=step)

    def log_checkpointed_metrics(self, state: dict[str, Any]) -> None:
        """After a restart: the last checkpoint's metrics, if MLflow missed them."""
        if state.get("metrics"):
            self.log_once(state["metrics"], step=int(state["epoch"]))

    def report(self, epoch: int, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Checkpoint (rank 0, ``state``) and report, then MLflow (rank 0)."""
        metrics = numeric(metrics)
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, **{**state, "metrics": metrics})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        self.log_once(metrics, step=epoch)

    def stop_nonfinite(self, epoch: int, terms: list[str], last_good: int | None) -> None:
        """Rank 0: record why the run stopped (the driver raises it) and fail the MLflow run."""
        if self.rank != 0:
            return
        record = {"epoch": epoch, "terms": terms, "last_good_epoch": last_good}
        (self.run_dir / STOPPED_FILE).write_text(json.dumps(record))
        self.tracker.set_tag("viewcoop.stopped", f"non-finite {', '.join(terms)} at epoch {epoch}")
        self.tracker.finish(failed=True)

    def finish(self, cfg: ExperimentConfig, state: dict[str, Any]) -> None:
        """Rank 0, after the last epoch: results table and paper figures as artifacts."""
        if self.rank != 0:
            return
        tracker = self.tracker
        table = self.run_dir / "results.md"
        table.write_text(history_markdown(metric_history(tracker.tracking_uri, tracker.run_id)))
        tracker.log_artifact(table)
        if cfg.train.figures:
            with tempfile.TemporaryDirectory() as directory:
                save_checkpoint(directory, **state)
                paths = make_figures(
                    directory, self.run_dir / "figures", max_samples=cfg.train.figure_samples
                )
            for path in paths.values():
                tracker.log_artifact(path, "figures")
            summary = json.loads(paths["summary"].read_text())
            tracker.log_metrics(summary["metrics"], step=state["epoch"])
        tracker.finish()

    def fail(self) -> None:
        if self.tracker is not None:
            self.tracker.finish(failed=True)
