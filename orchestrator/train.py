"""Driver side of one training: data check, Ray, the clustering actor, TorchTrainer, MLflow.

Re-running with the same ``run_name`` and ``ray.storage_path`` resumes: Ray Train V2
restores its checkpoint manager from storage, the workers continue at the next epoch and
rank 0 continues the MLflow run whose id the checkpoint holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.actors import actor_name, start_clustering_actor
from orchestrator.config import flatten, save_resolved
from orchestrator.console import library_log_level, verbose_enabled, without_record
from orchestrator.progress import LiveProgress
from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.components import load_dataset
from viewcoop_core.engine.tracking import RUN_NAME_TAG, metric_history, resolve_tracking_uri
from viewcoop_core.outputs import check_output_name, claim_output_dir, owns, write_marker
from viewcoop_core.synthetic import ensure_synthetic
from viewcoop_core.synthetic.spec import PRETRAIN_SPEC
from viewcoop_core.synthetic.weights import ensure_pretrained_tiny_clip
from workers.train_loop import train_loop_per_worker

logger = logging.getLogger(__name__)

RUN_KIND = "run"


@dataclass
class TrainingOutcome:
    run_name: str
    run_dir: Path
    mlflow_run_id: str | None
    tracking_uri: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    history: list[dict[str, float]]


def default_run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def ensure_dataset(cfg: ExperimentConfig) -> None:
    """Draw the synthetic set when it is the chosen dataset and not there yet (or drawn
    with other parameters, e.g. an older demo's set)."""
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data.root, cfg.data.synthetic)


def ensure_weights(cfg: ExperimentConfig) -> ExperimentConfig:
    """With ``model.synthetic_pretrain``: the cached synthetic-pretrained tiny CLIP as
    ``model.pretrained`` (trained here, on the driver, the first time)."""
    if not cfg.model.synthetic_pretrain:
        return cfg
    path = ensure_pretrained_tiny_clip(
        Path(cfg.data.root).parent / "pretrained",
        PRETRAIN_SPEC.replace(image_size=cfg.model.image_size),
        max_seconds=cfg.model.synthetic_pretrain_seconds,
    )
    tree = cfg.to_dict()
    tree["model"].update(pretrained=str(path), synthetic_pretrain=False)
    return ExperimentConfig.from_dict(tree)


def claim_run_dir(run_dir: Path) -> Path:
    """The run's folder: new, or one of ours (marked; a run of an earlier version is
    recognised by its resolved config.yaml), never a foreign folder."""
    if (run_dir / "config.yaml").is_file() and not owns(run_dir, RUN_KIND):
        write_marker(run_dir, RUN_KIND)
    return claim_output_dir(run_dir, RUN_KIND, purpose="a training run")


def init_ray(address: str | None, namespace: str, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a cluster, "auto") or start a local instance."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "namespace": namespace,
        "log_to_driver": True,
        "logging_level": library_log_level(),
    }
    if address:
        kwargs["address"] = address
        ray.init(**kwargs)
        return
    quiet_local_instance()
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


def quiet_local_instance() -> None:
    """No Ray Train preemption watcher on a local instance (it can be asked for in the
    environment): one machine has no node to lose, and creating the watcher makes the
    Train controller log a core_worker.cc error (ray-project/ray#53727)."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Workers may start in another directory: pin relative data and storage paths."""
    tree = cfg.to_dict()
    tree["data"]["root"] = str(Path(cfg.data.root).resolve())
    if cfg.data.masks_dir:
        tree["data"]["masks_dir"] = str(Path(cfg.data.masks_dir).resolve())
    if "://" not in cfg.ray.storage_path:
        tree["ray"]["storage_path"] = str(Path(cfg.ray.storage_path).resolve())
    return ExperimentConfig.from_dict(tree)


def train_loop_config(
    cfg: ExperimentConfig,
    run_name: str,
    run_dir: Path,
    tracking_uri: str,
    parent_run_id: str | None,
) -> dict[str, Any]:
    resolved_path = save_resolved(cfg, run_dir / "config.yaml")
    return {
        "experiment": cfg.to_dict(),
        "run_name": run_name,
        "run_dir": str(run_dir),
        "actor_name": actor_name(run_name),
        "namespace": cfg.ray.namespace,
        "resolved_config_path": str(resolved_path),
        "flat_params": flatten(cfg.to_dict()),
        "log_level": library_log_level(),
        "mlflow": {
            "tracking_uri": tracking_uri,
            "experiment": cfg.tracking.experiment,
            "parent_run_id": parent_run_id,
            "artifact_root": str(Path(cfg.ray.storage_path) / "mlartifacts")
            if "://" not in cfg.ray.storage_path
            else None,
        },
    }


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
) -> TrainingOutcome:
    """Train one configuration to the end (or resume it) and return its final figures.

    ``callbacks``: Ray Train user callbacks, e.g. Tune's ``TuneReportCallback`` in a sweep.
    """
    ensure_dataset(cfg)
    cfg = ensure_weights(absolute_paths(cfg))
    run_name = run_name or default_run_name(cfg)
    run_dir = claim_run_dir(Path(cfg.ray.storage_path) / check_output_name(run_name, "run name"))
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.ray.storage_path)
    init_ray(cfg.ray.address, cfg.ray.namespace, num_cpus)

    dataset = load_dataset(cfg.data)
    true_ids = np.array([s.pid for s in dataset.train], dtype=np.int64)
    actor = start_clustering_actor(cfg, run_name, len(dataset.train), true_ids, cfg.ray.namespace)
    loop_config = train_loop_config(cfg, run_name, run_dir, tracking_uri, parent_run_id)
    try:
        with LiveProgress(run_name, cfg.train.epochs, cfg.train.progress) as progress:
            trainer = build_trainer(
                cfg, loop_config, run_name, [*(callbacks or []), *progress.callbacks]
            )
            result = trainer.fit()
    finally:
        ray.kill(actor)
    run_id = find_run_id(tracking_uri, cfg.tracking.experiment, run_name)
    history = metric_history(tracking_uri, run_id) if run_id else []
    if result.error is not None:
        raise result.error
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
