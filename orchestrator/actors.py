"""Placing the clustering actor: one per run, on a GPU when the cluster has one."""

from __future__ import annotations

import logging

import numpy as np
import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from viewcoop_core.config import ExperimentConfig
from workers.clustering_service import ClusteringService

logger = logging.getLogger(__name__)


def actor_name(run_name: str) -> str:
    return f"viewcoop-clustering-{run_name}"


def cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) >= 1


def actor_gpus(configured: float | None) -> float:
    """The configured GPU share, else one GPU when the cluster has any, else none."""
    if configured is not None:
        return configured
    return 1.0 if cluster_has_gpu() else 0.0


def actor_cpus(configured: float | None, num_gpus: float) -> float:
    """CPUs reserved for the actor. Without a GPU none by default: the Train workers sit
    blocked on the broadcast while it clusters, so it borrows their cores rather than
    holding cores that would idle through the training phase."""
    if configured is not None:
        return configured
    return 1.0 if num_gpus > 0 else 0.0


def start_clustering_actor(
    cfg: ExperimentConfig,
    run_name: str,
    num_samples: int,
    true_ids: np.ndarray | None,
    camids: np.ndarray,
    namespace: str,
):
    """Create (or reuse) the run's named clustering actor.

    It is scheduled outside any placement group: inside a Tune trial the trial's group
    would otherwise capture it and starve the trial's own Train workers.
    """
    num_gpus = actor_gpus(cfg.ray.actor_num_gpus)
    remote_cls = ray.remote(ClusteringService)
    handle = remote_cls.options(
        name=actor_name(run_name),
        namespace=namespace,
        get_if_exists=True,
        lifetime=None,
        num_cpus=actor_cpus(cfg.ray.actor_num_cpus, num_gpus),
        num_gpus=num_gpus,
        max_restarts=2,
        max_task_retries=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
    ).remote(
        num_samples,
        cfg.cluster,
        cfg.graph,
        true_ids=true_ids,
        camids=camids,
        keep_image_features=cfg.loss.graph_over_all,
    )
    logger.info("clustering actor %s (%s GPU)", actor_name(run_name), num_gpus)
    return handle
