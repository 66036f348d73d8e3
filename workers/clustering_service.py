"""The clustering actor's body: gathers the workers' feature shards, then clusters.

``orchestrator.actors`` wraps this class with ``ray.remote`` so one actor (on a GPU when
the cluster has one) serves all Ray Train workers of a run. Each worker hands over its
shard of image and text features (``add_shard``, through the object store); rank 0
then calls ``cluster`` and broadcasts the returned object's ref, so every worker
trains on the very same labels. The clustering itself is the Ray-free
``viewcoop_core.engine.clustering_step``.
"""

from __future__ import annotations

import logging

import numpy as np

from viewcoop_core.config import ClusterConfig, GraphConfig
from viewcoop_core.engine.clustering_step import ClusteringStep, ClusterResult
from workers import faults

logger = logging.getLogger(__name__)


class MissingShardsError(RuntimeError):
    """Not every worker's shard of an epoch is here (e.g. the actor restarted in between):
    the workers send their shards again."""


class ClusteringService:
    """Gathers feature shards per epoch and clusters them with a ``ClusteringStep``.

    Args:
        num_samples: N, the size of the training set.
        cluster, graph: the experiment config's sections.
        true_ids: int[N] ground-truth identities when known (synthetic), for label quality.
        camids: int[N] camera of each training image (camera-aware normalisation).
        device: where Jaccard runs; "auto" = CUDA when visible to this process.
        keep_image_features: send the image features back with the labels (L_g against
            all N training images, ``LossConfig.graph_over_all``).
    """

    def __init__(
        self,
        num_samples: int,
        cluster: ClusterConfig,
        graph: GraphConfig,
        true_ids: np.ndarray | None = None,
        camids: np.ndarray | None = None,
        device: str = "auto",
        keep_image_features: bool = False,
    ) -> None:
        self.num_samples = num_samples
        self.step = ClusteringStep(
            cluster,
            graph,
            true_ids=true_ids,
            camids=camids,
            device=device,
            keep_image_features=keep_image_features,
        )
        self._shards: dict[int, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        logger.info("clustering service on %s for N=%d", self.step.device, num_samples)

    def add_shard(
        self, epoch: int, rank: int, indices: np.ndarray, img: np.ndarray, txt: np.ndarray
    ) -> int:
        """Store one worker's shard: indices int[n], img/txt float32[n, D]. Returns n."""
        if len(indices) != len(img) or len(indices) != len(txt):
            raise ValueError(
                f"shard of rank {rank}: {len(indices)} indices, {len(img)} img, {len(txt)} txt"
            )
        # Older epochs can no longer be asked for; drop them so memory stays one epoch.
        for stale in [e for e in self._shards if e < epoch]:
            del self._shards[stale]
        self._shards.setdefault(epoch, {})[rank] = (
            np.asarray(indices),
            np.asarray(img),
            np.asarray(txt),
        )
        return len(indices)

    def assemble(self, epoch: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Shards of ``epoch`` in dataset order: float32[N, D] image and text features."""
        shards = self._shards.get(epoch, {})
        if len(shards) != world_size:
            raise MissingShardsError(
                f"epoch {epoch}: {len(shards)} of {world_size} feature shards arrived"
            )
        indices = np.concatenate([s[0] for s in shards.values()])
        if len(indices) != self.num_samples or len(np.unique(indices)) != self.num_samples:
            raise RuntimeError(
                f"epoch {epoch}: shards cover {len(np.unique(indices))} distinct of {self.num_samples} samples"
            )
        order = np.argsort(indices)
        img = np.concatenate([s[1] for s in shards.values()])[order]
        txt = np.concatenate([s[2] for s in shards.values()])[order]
        return img, txt

    def cluster(self, epoch: int, world_size: int, text_identity: bool = True) -> ClusterResult:
        faults.actor_exit(epoch)
        img, txt = self.assemble(epoch, world_size)
        del self._shards[epoch]
        return self.step.run(epoch, img, txt, text_identity)
