"""Pseudo-labels: the exact k-reciprocal Jaccard distance, then DBSCAN.

``jaccard.py`` computes the distance sparsely (O(N k) memory; stages in ``knn``,
``neighbourhoods``, ``encoding``, ``join``), ``dbscan.py`` clusters it with one of the
DBSCAN backends, and ``pseudo_labels`` strings the two together. On CUDA with the torch
backend (the default there) everything stays on the device: no N x N, no host CSR.
"""

from __future__ import annotations

import logging

import numpy as np
from torch import Tensor

from viewcoop_core.arrays import feature_matrix
from viewcoop_core.clustering.dbscan import (
    BACKENDS,
    available_backends,
    dbscan,
    dbscan_upper_pairs,
)
from viewcoop_core.clustering.jaccard import jaccard_distance, jaccard_upper_pairs
from viewcoop_core.clustering.knn import nearest_neighbour_ranks
from viewcoop_core.config import ClusterConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "ClusterConfig",
    "available_backends",
    "dbscan",
    "jaccard_distance",
    "jaccard_upper_pairs",
    "nearest_neighbour_ranks",
    "pseudo_labels",
]


def _edge_threshold(eps: float) -> float:
    """The smallest max_distance keeping every pair a DBSCAN at eps can call neighbours.

    Distances are float32 and sklearn compares ``data <= eps`` in float32, so keep
    d <= float32(eps): d < the next float32 above it.
    """
    above = np.nextafter(np.float32(eps), np.float32(np.inf))
    return min(1.0, float(above))


def pseudo_labels(features: Tensor | np.ndarray, config: ClusterConfig | None = None) -> np.ndarray:
    """Cluster features into pseudo-identities: Jaccard distance, then DBSCAN.

    Args:
        features: (N, D) floats as a torch tensor (computed on its device), a NumPy or
            CuPy array or a nested list; every value finite. On CUDA with backend auto or
            torch, DBSCAN runs there too, from the device's sparse pairs.
        config: eps (DBSCAN radius on the Jaccard distance, in (0, 1)), min_samples,
            k1, k2 and the DBSCAN backend; ``ClusterConfig()`` when None.

    Returns:
        (N,) int64 labels, -1 for outliers.

    Raises:
        TypeError: ``features`` of another kind; ValueError: not 2-D, or rows with NaN
        or Inf (counted in the message: they would make every sample an outlier).
    """
    features = feature_matrix(features, "features")
    if config is not None and not isinstance(config, ClusterConfig):
        raise TypeError(f"config must be a ClusterConfig or None, got {type(config).__name__}")
    config = config or ClusterConfig()
    max_distance = _edge_threshold(config.eps)
    if features.is_cuda and config.backend in ("auto", "torch"):
        logger.info(
            "pseudo-labels on %s: Jaccard and DBSCAN (torch) on the device", features.device
        )
        rows, cols, distances = jaccard_upper_pairs(
            features,
            k1=config.k1,
            k2=config.k2,
            max_distance=max_distance,
            neighbourhood=config.neighbourhood,
        )
        n = features.shape[0]
        return dbscan_upper_pairs(n, rows, cols, distances, config.eps, config.min_samples)
    distances = jaccard_distance(
        features,
        k1=config.k1,
        k2=config.k2,
        max_distance=max_distance,
        neighbourhood=config.neighbourhood,
    )
    return dbscan(distances, eps=config.eps, min_samples=config.min_samples, backend=config.backend)
