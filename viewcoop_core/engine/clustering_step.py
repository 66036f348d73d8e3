"""One epoch's clustering on the gathered features: both modalities, centroids, statistics.

``ClusteringStep.run(epoch, img, txt)`` is what the clustering actor calls once every
worker's shard has arrived (``workers.clustering_service``); benchmarks and tests call it
directly. Per modality: pseudo-labels (k-reciprocal Jaccard + DBSCAN, ``clustering``)
and L2-normalised centroids; then cluster counts, label quality against the true ids
when they are known (synthetic data), the mutual graph's pair statistics per tau, and
the dense Dic (Eq. 3) as an independent cross-check where it is cheap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.clustering.camera import camera_normalized
from viewcoop_core.config import ClusterConfig, GraphConfig
from viewcoop_core.graph import TAU_PRESETS, graph_statistics, mutual_dictionary
from viewcoop_core.label_quality import label_quality
from viewcoop_core.losses import cluster_centroids
from viewcoop_core.losses.camera_proxies import camera_proxy_labels

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
    txt_centroids_by_img: np.ndarray | None = None
    # float32[N, D] image features of the epoch, for L_g against all N
    # (``loss.graph_scope: all``); None otherwise (N x D is not small).
    img_features: np.ndarray | None = None
    # Camera proxies (when the cameras are known): int64[N] proxy of each sample,
    # float32[P, D] their image centroids, int64[P] their cameras.
    y_proxy: np.ndarray | None = None
    proxy_centroids: np.ndarray | None = None
    proxy_cams: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_img_clusters(self) -> int:
        return int(self.img_centroids.shape[0])

    @property
    def num_txt_clusters(self) -> int:
        return int(self.txt_centroids.shape[0])


class ClusteringStep:
    """Clusters one epoch's image and text features into a ``ClusterResult``.

    Args:
        cluster: the DBSCAN / Jaccard settings (``ClusterConfig``).
        graph: the mutual dictionary's backend (``GraphConfig.dic_backend``).
        true_ids: int[N] ground-truth identities when known (synthetic), for label quality.
        camids: int[N] camera of each sample, for ``cluster.camera_norm``.
        device: where Jaccard runs; "auto" = CUDA when visible to this process.
        taus: the accepted-Dic sets whose edge statistics are reported.
        dense_dictionary_max_n: on the CPU, build the dense N x N Dic (int8, N^2 bytes) only
            up to this N; on a GPU it is always built (milliseconds) and cross-checked.
        true_image_labels: use ``true_ids`` as the image pseudo-labels instead of clustering
            the image features: a diagnostic ceiling (what the schedule reaches with perfect
            labels; ``benchmarks/train_local.py --true-image-labels``), never a method.
        true_text_labels: the same for the text pseudo-labels (``--true-text-labels``): what
            the cross-modal half (L_t, L_cm, the mutual graph's L_g) can add when the text
            side carries perfect identity, the image side still clustered.
        keep_image_features: return the image features in the result (L_g against all N,
            ``LossConfig.graph_over_all``).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        graph: GraphConfig,
        true_ids: np.ndarray | None = None,
        camids: np.ndarray | None = None,
        device: str = "auto",
        taus: tuple[tuple[int, ...], ...] = tuple(tuple(sorted(t)) for t in TAU_PRESETS.values()),
        dense_dictionary_max_n: int = 20_000,
        true_image_labels: bool = False,
        true_text_labels: bool = False,
        keep_image_features: bool = False,
    ) -> None:
        oracle = {"img": true_image_labels, "txt": true_text_labels}
        if any(oracle.values()) and true_ids is None:
            raise ValueError(
                "true_image_labels / true_text_labels need the true ids of the samples"
            )
        # The true ids as dense labels 0..K-1, made once: those modalities' labels every epoch.
        dense_ids = (
            np.unique(true_ids, return_inverse=True)[1].astype(np.int32)
            if any(oracle.values())
            else None
        )
        self.fixed_labels = {modality: dense_ids for modality, fixed in oracle.items() if fixed}
        self.cluster = cluster
        self.keep_image_features = keep_image_features
        self.dic_backend = graph.dic_backend
        self.taus = tuple(tuple(t) for t in taus)
        self.dense_dictionary_max_n = dense_dictionary_max_n
        self.true_ids = None if true_ids is None else np.asarray(true_ids, dtype=np.int64)
        self.camids = None if camids is None else np.asarray(camids, dtype=np.int64)
        if cluster.camera_norm != "none" and self.camids is None:
            raise ValueError(
                f"cluster.camera_norm={cluster.camera_norm!r} needs the camera of every sample"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def run(
        self, epoch: int, img: np.ndarray, txt: np.ndarray, text_identity: bool = True
    ) -> ClusterResult:
        """Pseudo-labels, centroids and statistics for float32[N, D] image/text features.

        ``text_identity`` False: the text features carry no identity yet (prompts with a
        context per pseudo-identity before the first clustering), so the text
        pseudo-labels are all -1 (no text clusters) rather than one cluster of everything.
        """
        timings: dict[str, float] = {}
        labels = {}
        centroids = {}
        for modality, feats in (("img", img), ("txt", txt)):
            start = time.perf_counter()
            if modality in self.fixed_labels:
                labels[modality] = self.fixed_labels[modality].copy()
            elif modality == "txt" and not text_identity:
                labels[modality] = np.full(len(feats), -1, dtype=np.int32)
                logger.info("epoch %d: no text pseudo-labels before the first clustering", epoch)
            else:
                tensor = torch.as_tensor(feats, device=self.device)
                if self.cluster.camera_norm != "none":
                    tensor = camera_normalized(tensor, self.camids, self.cluster.camera_norm)
                labels[modality] = pseudo_labels(tensor, self.cluster).astype(np.int32)
            timings[f"cluster_{modality}_s"] = time.perf_counter() - start
            cents, _ = cluster_centroids(
                torch.as_tensor(feats), torch.as_tensor(labels[modality], dtype=torch.long)
            )
            centroids[modality] = cents.numpy().astype(np.float32)
        by_img, _ = cluster_centroids(
            torch.as_tensor(txt), torch.as_tensor(labels["img"], dtype=torch.long)
        )
        stats = self.statistics(labels["img"], labels["txt"], timings)
        proxies = self.camera_proxies(img, labels["img"])
        result = ClusterResult(
            epoch=epoch,
            y_img=labels["img"],
            y_txt=labels["txt"],
            img_centroids=centroids["img"],
            txt_centroids=centroids["txt"],
            txt_centroids_by_img=by_img.numpy().astype(np.float32),
            img_features=np.asarray(img, dtype=np.float32) if self.keep_image_features else None,
            stats=stats,
            timings=timings,
            **proxies,
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

    def camera_proxies(self, img: np.ndarray, y_img: np.ndarray) -> dict[str, np.ndarray]:
        """``ClusterResult``'s camera-proxy fields; empty when the cameras are unknown."""
        if self.camids is None:
            return {}
        y_proxy, proxy_cams = camera_proxy_labels(y_img, self.camids)
        cents, _ = cluster_centroids(torch.as_tensor(img), torch.as_tensor(y_proxy))
        return {
            "y_proxy": y_proxy,
            "proxy_centroids": cents.numpy().astype(np.float32),
            "proxy_cams": proxy_cams,
        }

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
