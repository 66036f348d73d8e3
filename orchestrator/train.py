"""Driver side of one training: Ray, the clustering actor, TorchTrainer, MLflow.

What comes before Ray (dataset drawn and checked, paths pinned, weights, the run folder)
is ``orchestrator.prepare``, importable without Ray so errors there come in seconds.
Re-running with the same ``run_name`` and ``ray.storage_path`` resumes: Ray Train V2
restores its checkpoint manager from storage, the workers continue at the next epoch and
rank 0 continues the MLflow run whose id the checkpoint holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.actors import actor_name, start_clustering_actor
from orchestrator.config import flatten, save_resolved
from orchestrator.console import library_log_level, verbose_enabled, without_record
from orchestrator.errors import NonFiniteLossError, RunInterrupted
from orchestrator.prepare import (  # noqa: F401 - re-exported: the pre-Ray steps
    RUN_KIND,
    PreparedRun,
    absolute_paths,
    check_reachable,
    claim_run_dir,
    default_run_name,
    ensure_dataset,
    ensure_weights,
    prepare_run,
)
from orchestrator.progress import LiveProgress
from viewcoop_core.config import ExperimentConfig
from viewcoop_core.data.datasets import load_dataset
from viewcoop_core.engine.checkpoint import CheckpointError, read_checkpoint
from viewcoop_core.engine.tracking import (
    RUN_NAME_TAG,
    RunTracker,
    metric_history,
    resolve_tracking_uri,
)
from workers.reporting import STOPPED_FILE
from workers.train_loop import train_loop_per_worker

logger = logging.getLogger(__name__)

CHECKPOINT_MANAGER_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's file


def raise_if_stopped(run_dir: Path) -> None:
    """The workers stop a run whose losses became non-finite (``workers.reporting``)."""
    record_path = run_dir / STOPPED_FILE
    if not record_path.is_file():
        return
    record = json.loads(record_path.read_text())
    last = record.get("last_good_epoch")
    kept = f"the last good checkpoint is epoch {last}" if last else "no epoch was checkpointed"
    raise NonFiniteLossError(
        f"epoch {record['epoch']}: loss term(s) {', '.join(record['terms'])} became NaN or "
        f"infinite, so the run stopped; {kept} (in {run_dir}). Lower the learning rates "
        "(optim.lr, optim.prompt_lr) or check the data, then resume with the same run name."
    )


@dataclass
class TrainingOutcome:
    run_name: str
    run_dir: Path
    mlflow_run_id: str | None
    tracking_uri: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    history: list[dict[str, float]]


def init_ray(address: str | None, namespace: str, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a cluster, "auto") or start a local instance ("local" or
    None; ``num_cpus`` sizes it)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "namespace": namespace,
        "log_to_driver": True,
        "logging_level": library_log_level(),
    }
    if address and address != "local":
        check_reachable(address)
        ray.init(address=address, **kwargs)
        return
    local_instance_settings()
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    # Ray turns token auth on for a new local instance and warns that it did, with how to
    # turn it off: the safe default is kept and the warning shown only with -v.
    quiet = without_record(
        "ray._private.authentication.authentication_token_setup",
        "Token authentication is enabled for this Ray cluster",
    )
    with contextlib.nullcontext() if verbose_enabled() else quiet:
        ray.init(**kwargs)


def local_instance_settings() -> None:
    """Settings of a local instance this process starts (each can be overridden in the
    environment; a cluster's own settings are never touched).

    Workers at the driver's priority: Ray starts every worker process at niceness 15
    (``RAY_worker_niceness``), made for nodes that run nothing else. On a workstation
    that also runs anything at the default priority, the Train workers and the
    clustering actor then get a few percent of a core: a demo beside one other busy
    process had not finished its first epoch after 6 minutes (README, "Two commands").

    No Ray Train preemption watcher: one machine has no node to lose, and creating the
    watcher makes the Train controller log a core_worker.cc error (ray-project/ray#53727).
    """
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def open_mlflow_run(
    cfg: ExperimentConfig,
    run_name: str,
    run_dir: Path,
    tracking_uri: str,
    parent_run_id: str | None,
) -> str:
    """The run's MLflow run, opened here on the driver: the existing run of this name when
    resuming, else a new one with the flattened config as params and the resolved config
    as an artifact. Workers only log to it, so a restarted worker group (or a resumed
    run) continues the very same run."""
    resolved_path = save_resolved(cfg, run_dir / "config.yaml")
    run_id = find_run_id(tracking_uri, cfg.tracking.experiment, run_name)
    artifact_root = (
        str(Path(cfg.ray.storage_path) / "mlartifacts")
        if "://" not in cfg.ray.storage_path
        else None
    )
    tracker = RunTracker(
        tracking_uri,
        cfg.tracking.experiment,
        run_name,
        run_id=run_id,
        parent_run_id=parent_run_id,
        artifact_root=artifact_root,
    )
    if run_id is None:
        tracker.log_params(flatten(cfg.to_dict()))
        tracker.log_artifact(resolved_path)
    return tracker.run_id


def train_loop_config(
    cfg: ExperimentConfig, run_name: str, run_dir: Path, tracking_uri: str, run_id: str
) -> dict[str, Any]:
    return {
        "experiment": cfg.to_dict(),
        "run_name": run_name,
        "run_dir": str(run_dir),
        "actor_name": actor_name(run_name),
        "namespace": cfg.ray.namespace,
        "log_level": library_log_level(),
        "mlflow": {
            "tracking_uri": tracking_uri,
            "experiment": cfg.tracking.experiment,
            "run_id": run_id,
        },
    }


def fit_interruptibly(trainer: TorchTrainer):
    """``trainer.fit()`` in a thread, so Ctrl-C reaches this (main) thread at once instead
    of Ray Train's own handler, which waits for the workers to wind down."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=fit, name="viewcoop-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def stop_interrupted_run(run_name: str, tracking_uri: str, run_id: str) -> None:
    """After Ctrl-C: the MLflow run is marked KILLED and Ray stops the workers now; the
    checkpoints in storage stay, so the same command with the same run name resumes."""
    logger.warning("interrupted: stopping run %s (its last checkpoint is kept)", run_name)
    try:
        MlflowClient(tracking_uri).set_terminated(
            run_id, status=RunStatus.to_string(RunStatus.KILLED)
        )
    finally:
        ray.shutdown()


def unlisted_checkpoint(run_dir: Path) -> str | None:
    """The newest readable checkpoint of a run that Ray Train's snapshot does not list.

    Ray Train resumes from ``checkpoint_manager_snapshot.json``, which its controller
    writes some time after a worker's report returned; a run interrupted in between
    (Ctrl-C right after an epoch, a killed driver) has a checkpoint folder but no
    snapshot, and would start over. The workers then resume from this folder instead.
    """
    if (run_dir / CHECKPOINT_MANAGER_SNAPSHOT).is_file() or not run_dir.is_dir():
        return None
    folders = sorted(run_dir.glob("checkpoint_*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders:
        try:
            state = read_checkpoint(folder)
        except CheckpointError as exc:  # e.g. cut off mid-write by the interruption
            logger.warning("skipping checkpoint %s: %s", folder, exc)
            continue
        logger.info("resuming from %s (epoch %d)", folder, int(state["epoch"]))
        return str(folder)
    return None


def build_trainer(
    cfg: ExperimentConfig, loop_config: dict[str, Any], run_name: str, callbacks: list | None = None
) -> TorchTrainer:
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=cfg.ray.storage_path,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            logging_config=LoggingConfig(logging.getLevelName(library_log_level())),
        ),
    )


def run_training(
    cfg: ExperimentConfig,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    num_cpus: int | None = None,
    callbacks: list | None = None,
    check_data: bool = True,
) -> TrainingOutcome:
    """Train one configuration to the end (or resume it) and return its final figures.

    ``callbacks``: Ray Train user callbacks, e.g. Tune's ``TuneReportCallback`` in a sweep.
    ``check_data``: run the dataset pre-flight (a sweep's driver already did).
    """
    prepared = prepare_run(cfg, run_name, check=check_data)
    return run_prepared(prepared, parent_run_id, num_cpus, callbacks)


def run_prepared(
    prepared: PreparedRun,
    parent_run_id: str | None = None,
    num_cpus: int | None = None,
    callbacks: list | None = None,
) -> TrainingOutcome:
    """``run_training`` from the point where Ray starts (``orchestrator.prepare`` did the rest)."""
    cfg, run_name, run_dir = prepared.cfg, prepared.run_name, prepared.run_dir
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.ray.storage_path)
    init_ray(cfg.ray.address, cfg.ray.namespace, num_cpus)

    dataset = load_dataset(cfg.data)
    true_ids = np.array([s.pid for s in dataset.train], dtype=np.int64)
    camids = np.array([s.camid for s in dataset.train], dtype=np.int64)
    run_id = open_mlflow_run(cfg, run_name, run_dir, tracking_uri, parent_run_id)
    actor = start_clustering_actor(
        cfg, run_name, len(dataset.train), true_ids, camids, cfg.ray.namespace
    )
    loop_config = train_loop_config(cfg, run_name, run_dir, tracking_uri, run_id)
    loop_config["unlisted_checkpoint"] = unlisted_checkpoint(run_dir)
    (run_dir / STOPPED_FILE).unlink(missing_ok=True)
    try:
        with LiveProgress(run_name, cfg.train.epochs, cfg.train.progress) as progress:
            trainer = build_trainer(
                cfg, loop_config, run_name, [*(callbacks or []), *progress.callbacks]
            )
            result = fit_interruptibly(trainer)
    except KeyboardInterrupt:
        stop_interrupted_run(run_name, tracking_uri, run_id)
        raise RunInterrupted(run_name, run_dir) from None
    finally:
        if ray.is_initialized():
            ray.kill(actor)
    log_data_metrics(tracking_uri, run_id, prepared.data_metrics)
    history = metric_history(tracking_uri, run_id)
    if result.error is not None:
        raise result.error
    raise_if_stopped(run_dir)
    return TrainingOutcome(
        run_name=run_name,
        run_dir=run_dir,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        metrics=dict(result.metrics or {}),
        checkpoint_path=None if result.checkpoint is None else result.checkpoint.path,
        history=history,
    )


def find_run_id(tracking_uri: str, experiment: str, run_name: str) -> str | None:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_data_metrics(tracking_uri: str, run_id: str | None, metrics: dict[str, float]) -> None:
    """The pre-flight's figures (e.g. training images skipped as unreadable) on the run."""
    if run_id is None or not metrics:
        return
    client = MlflowClient(tracking_uri)
    for key, value in metrics.items():
        if not client.get_metric_history(run_id, key):  # once per run, not per resume
            client.log_metric(run_id, key, value, step=0)
