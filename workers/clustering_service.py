"""The per-epoch clustering service: features in, pseudo-labels and centroids out.

A plain class, testable without Ray; ``orchestrator.actors`` wraps it with
``ray.remote`` so one actor (on a GPU when the cluster has one) serves all Ray Train
workers of a run. Each worker hands over its shard of image and text features
(``add_shard``); rank 0 then calls ``cluster`` and broadcasts the returned object's ref,
so every worker trains on the very same labels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.config import ClusterConfig, GraphConfig
from viewcoop_core.graph import graph_statistics, mutual_dictionary
from viewcoop_core.label_quality import label_quality
from viewcoop_core.memory import cluster_centroids

logger = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """What every worker receives each epoch (small: labels and centroids, no N x N).

    y_img, y_txt: int32[N], -1 = outlier; img_centroids: float32[C_img, D];
    txt_centroids: float32[C_txt, D]; stats: flat str -> float; timings: seconds per stage.
    """

    epoch: int
    y_img: np.ndarray
    y_txt: np.ndarray
    img_centroids: np.ndarray
    txt_centroids: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_img_clusters(self) -> int:
        return int(self.img_centroids.shape[0])

    @property
    def num_txt_clusters(self) -> int:
        return int(self.txt_centroids.shape[0])


def service_kwargs(cluster: ClusterConfig, graph: GraphConfig) -> dict[str, Any]:
    """The service's clustering arguments from the experiment config's sections."""
    return {
        "eps": cluster.eps,
        "min_samples": cluster.min_samples,
        "k1": cluster.k1,
        "k2": cluster.k2,
        "backend": cluster.backend,
        "dic_backend": graph.dic_backend,
    }


class ClusteringService:
    """Gathers feature shards, clusters both modalities, returns a ``ClusterResult``.

    Args:
        num_samples: N, the size of the training set.
        eps, min_samples, k1, k2, backend: DBSCAN on the k-reciprocal Jaccard distance.
        taus: the accepted-Dic sets whose edge statistics are reported.
        dic_backend: backend of the dense mutual dictionary (``numpy``, ``torch``, ``cupy``, ``auto``).
        dense_dictionary_max_n: on the CPU, build the dense N x N Dic (int8, N^2 bytes) only up
            to this N; on a GPU it is always built (milliseconds) and cross-checked.
        true_ids: int[N] ground-truth identities when known (synthetic), for label quality.
        device: where Jaccard runs; "auto" = CUDA when visible to this process.
    """

    def __init__(
        self,
        num_samples: int,
        eps: float = 0.6,
        min_samples: int = 4,
        k1: int = 30,
        k2: int = 6,
        backend: str = "auto",
        taus: tuple[tuple[int, ...], ...] = ((0,), (1,), (1, 2), (2,)),
        dic_backend: str = "auto",
        dense_dictionary_max_n: int = 20_000,
        true_ids: np.ndarray | None = None,
        device: str = "auto",
    ) -> None:
        self.num_samples = num_samples
        self.cluster_kwargs = {
            "eps": eps,
            "min_samples": min_samples,
            "k1": k1,
            "k2": k2,
            "backend": backend,
        }
        self.taus = tuple(tuple(t) for t in taus)
        self.dic_backend = dic_backend
        self.dense_dictionary_max_n = dense_dictionary_max_n
        self.true_ids = None if true_ids is None else np.asarray(true_ids, dtype=np.int64)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._shards: dict[int, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        logger.info("clustering service on %s for N=%d", self.device, num_samples)

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
            raise RuntimeError(
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

    def cluster(self, epoch: int, world_size: int) -> ClusterResult:
        img, txt = self.assemble(epoch, world_size)
        del self._shards[epoch]
        return self.cluster_features(epoch, img, txt)

    def cluster_features(self, epoch: int, img: np.ndarray, txt: np.ndarray) -> ClusterResult:
        """Pseudo-labels, centroids and statistics for float32[N, D] image/text features."""
        timings: dict[str, float] = {}
        labels = {}
        centroids = {}
        for modality, feats in (("img", img), ("txt", txt)):
            start = time.perf_counter()
            tensor = torch.as_tensor(feats, device=self.device)
            labels[modality] = pseudo_labels(tensor, **self.cluster_kwargs).astype(np.int32)
            timings[f"cluster_{modality}_s"] = time.perf_counter() - start
            cents, _ = cluster_centroids(
                torch.as_tensor(feats), torch.as_tensor(labels[modality], dtype=torch.long)
            )
            centroids[modality] = cents.numpy().astype(np.float32)
        stats = self.statistics(labels["img"], labels["txt"], timings)
        result = ClusterResult(
            epoch=epoch,
            y_img=labels["img"],
            y_txt=labels["txt"],
            img_centroids=centroids["img"],
            txt_centroids=centroids["txt"],
            stats=stats,
            timings=timings,
        )
        logger.info(
            "epoch %d: %d image clusters (%.1f%% outliers), %d text clusters (%.1f%% outliers)",
            epoch,
            result.num_img_clusters,
            100 * stats["img_outlier_frac"],
            result.num_txt_clusters,
            100 * stats["txt_outlier_frac"],
        )
        return result

    def statistics(
        self, y_img: np.ndarray, y_txt: np.ndarray, timings: dict[str, float]
    ) -> dict[str, float]:
        """Cluster counts, outliers, label quality (when ids are known) and graph figures per tau."""
        stats: dict[str, float] = {}
        for modality, y in (("img", y_img), ("txt", y_txt)):
            stats[f"{modality}_clusters"] = float(y.max(initial=-1) + 1)
            stats[f"{modality}_outlier_frac"] = float((y < 0).mean()) if y.size else 0.0
            if self.true_ids is not None:
                for key, value in label_quality(y, self.true_ids).items():
                    stats[f"{modality}_{key}"] = value
        graph = graph_statistics(y_img, y_txt, taus=self.taus, true_ids=self.true_ids)
        stats.update({f"graph_{key}": float(value) for key, value in graph.items()})
        if self.build_dense_dictionary(len(y_img)):
            start = time.perf_counter()
            dic = mutual_dictionary(y_img, y_txt, backend=self.dic_backend)
            counts = off_diagonal_value_counts(dic, y_img, y_txt)
            timings["dictionary_s"] = time.perf_counter() - start
            expected = [graph[f"pairs_dic{v}"] for v in range(3)]
            if counts != expected:
                # Two independent computations of Eq. 3 disagree: a bug, never data.
                raise RuntimeError(f"dense Dic value counts {counts} != group counts {expected}")
        return stats

    def build_dense_dictionary(self, num_samples: int) -> bool:
        """The dense N x N Dic is built on the GPU (cheap), or on the CPU for small N."""
        on_gpu = self.device.type == "cuda" and self.dic_backend in ("auto", "cupy", "torch")
        return on_gpu or num_samples <= self.dense_dictionary_max_n


def off_diagonal_value_counts(dic: Any, y_img: np.ndarray, y_txt: np.ndarray) -> list[float]:
    """How many ordered pairs a != b have Dic == 0, 1, 2, counted where ``dic`` lives."""
    counts = [float((dic == v).sum()) for v in range(3)]  # numpy, torch or cupy, on its device
    diagonal = (np.asarray(y_img) >= 0).astype(int) + (np.asarray(y_txt) >= 0).astype(int)
    return [counts[v] - float((diagonal == v).sum()) for v in range(3)]
