"""How many trials run side by side: each trial's resource demand against the cluster."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import ray

from orchestrator.actors import actor_cpus, actor_gpus
from viewcoop_core.config import ExperimentConfig

logger = logging.getLogger(__name__)

TRIAL_CPUS = 0.01  # the trial process only drives its TorchTrainer


def trial_demand(
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    actor_cpus: float,
    actor_gpus: float,
    driver_cpus: float = TRIAL_CPUS,
) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds while it trains: its driver, its Train workers (one GPU
    each with ``use_gpu``) and its clustering actor (placed outside the trial's group)."""
    cpus = driver_cpus + num_workers * cpus_per_worker + actor_cpus
    gpus = (num_workers if use_gpu else 0) + actor_gpus
    return cpus, gpus


def max_concurrent_trials(
    cluster_cpus: float, cluster_gpus: float, trial_cpus: float, trial_gpus: float, num_trials: int
) -> int:
    """How many trials fit side by side, so none waits on another's workers; at least 1
    (a trial larger than the cluster waits for an autoscaler), at most ``num_trials``."""
    eps = 1e-6  # Ray rounds resources to 1e-4; 2 / 0.99 must still be 2
    fits = []
    if trial_cpus > 0:
        fits.append(math.floor(cluster_cpus / trial_cpus + eps))
    if trial_gpus > 0:
        fits.append(math.floor(cluster_gpus / trial_gpus + eps))
    fitting = min(fits) if fits else num_trials
    if fitting < 1:
        logger.warning(
            "one trial needs %.2f CPUs and %.2f GPUs but the cluster has %.2f and %.2f: "
            "trials will wait for more nodes",
            trial_cpus,
            trial_gpus,
            cluster_cpus,
            cluster_gpus,
        )
    return max(1, min(fitting, num_trials))


def concurrency_for(configs: Iterable[ExperimentConfig], num_trials: int) -> int:
    """``max_concurrent_trials`` for the connected cluster and the largest trial."""

    resources = ray.cluster_resources()
    demands = []
    for cfg in configs:
        gpus = actor_gpus(cfg.ray.actor_num_gpus)
        demands.append(
            trial_demand(
                cfg.ray.num_workers,
                cfg.ray.cpus_per_worker,
                cfg.ray.use_gpu,
                actor_cpus(cfg.ray.actor_num_cpus, gpus),
                gpus,
            )
        )
    cpus, gpus = max(d[0] for d in demands), max(d[1] for d in demands)
    limit = max_concurrent_trials(
        resources.get("CPU", 0.0), resources.get("GPU", 0.0), cpus, gpus, num_trials
    )
    logger.info(
        "each trial holds %.2f CPUs and %g GPUs; cluster %s CPUs / %s GPUs -> %d trial(s) at a time",
        cpus,
        gpus,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
        limit,
    )
    return limit
