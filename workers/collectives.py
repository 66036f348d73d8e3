"""What the Train workers exchange: feature shards to the clustering actor, its one
result broadcast to every rank, memory updates gathered across ranks, agreement flags."""

from __future__ import annotations

import logging
import time

import numpy as np
import ray
import ray.train.torch
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.train.collective import barrier, broadcast_from_rank_zero

from viewcoop_core.engine.clustering_step import ClusterResult
from workers.clustering_service import MissingShardsError

logger = logging.getLogger(__name__)

CLUSTERING_ATTEMPTS = 3
_ADD_SHARD_ATTEMPTS = 5
_ADD_SHARD_BACKOFF_S = 2.0


def per_worker_batch(batch_size: int, num_instances: int, world_size: int) -> int:
    """Split the global P x K batch over workers, keeping whole identities (multiples of K)."""
    return max(num_instances, (batch_size // world_size) // num_instances * num_instances)


def hand_over_features(actor, epoch: int, rank: int, shard: tuple[np.ndarray, ...]) -> None:
    """Put this shard (indices, img, txt) in the object store and give it to the actor.

    While the actor restarts after a crash its calls fail; the shard is sent again."""
    refs = [ray.put(part) for part in shard]
    for attempt in range(1, _ADD_SHARD_ATTEMPTS + 1):
        try:
            ray.get(actor.add_shard.remote(epoch, rank, *refs))
            return
        except RayActorError:
            if attempt == _ADD_SHARD_ATTEMPTS:
                raise
            logger.warning("epoch %d: the clustering actor is down; sending the shard again", epoch)
            time.sleep(_ADD_SHARD_BACKOFF_S * attempt)


def _recoverable(error: Exception) -> bool:
    """The actor died (and restarts, ``max_restarts``) or lost shards in a restart."""
    if isinstance(error, RayActorError):
        return True
    return isinstance(error, RayTaskError) and isinstance(error.cause, MissingShardsError)


def cluster_epoch(
    actor,
    epoch: int,
    rank: int,
    world_size: int,
    shard: tuple[np.ndarray, ...],
    text_identity: bool = True,
) -> ClusterResult:
    """Every rank's shard to the actor; rank 0 asks it to cluster; every rank reads that
    one result ref. If the actor dies on the way, the shards (still held by the workers)
    are sent again and the epoch's clustering is redone: every rank reads the same
    failed ref, so all of them agree to retry. ``text_identity`` False withholds the
    text pseudo-labels (see ``ClusteringStep.run``)."""
    for attempt in range(1, CLUSTERING_ATTEMPTS + 1):
        hand_over_features(actor, epoch, rank, shard)
        barrier()  # all shards are in the actor before anyone asks for the clustering
        ref = actor.cluster.remote(epoch, world_size, text_identity) if rank == 0 else None
        [ref] = broadcast_from_rank_zero([ref])
        try:
            result = ray.get(ref)
            result.stats["cluster_attempts"] = float(attempt)
            return result
        except (RayActorError, RayTaskError) as error:
            if not _recoverable(error) or attempt == CLUSTERING_ATTEMPTS:
                raise
            logger.warning(
                "epoch %d: the clustering actor failed (%s); clustering again from the "
                "workers' shards (attempt %d of %d)",
                epoch,
                type(error).__name__,
                attempt + 1,
                CLUSTERING_ATTEMPTS,
            )
    raise AssertionError("unreachable")


def gather_across_ranks(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (features [B, D], labels [B]) concatenated in rank order (equal B per rank)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return features, labels
    world = torch.distributed.get_world_size()
    feats = [torch.empty_like(features) for _ in range(world)]
    labs = [torch.empty_like(labels) for _ in range(world)]
    torch.distributed.all_gather(feats, features.contiguous())
    torch.distributed.all_gather(labs, labels.contiguous())
    return torch.cat(feats), torch.cat(labs)


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on at least one rank (every rank gets the same answer)."""
    if not torch.distributed.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def wrap_ddp(core: torch.nn.Module) -> torch.nn.Module:
    """DDP via Ray Train. Every trainable parameter takes part in every step (frozen parts
    have requires_grad off), so no unused-parameter search is needed."""
    return ray.train.torch.prepare_model(core)
