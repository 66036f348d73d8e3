"""How close pseudo-labels are to the true identities (known on synthetic data)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from viewcoop_core.arrays import as_numpy


def singletons_for_outliers(labels: np.ndarray) -> np.ndarray:
    """Give every outlier (-1) a cluster of its own, so scores do not treat them as one group."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    outliers = labels < 0
    labels[outliers] = labels.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    return labels


def cluster_purity(labels: np.ndarray, true_ids: np.ndarray) -> float:
    """Fraction of clustered (non-outlier) samples whose true id is their cluster's majority id."""
    labels = as_numpy(labels, "labels").astype(np.int64, copy=False)
    true_ids = as_numpy(true_ids, "true_ids").astype(np.int64, copy=False)
    keep = labels >= 0
    if not keep.any():
        return 0.0
    _, true_codes = np.unique(true_ids[keep], return_inverse=True)
    table = np.zeros((labels[keep].max() + 1, true_codes.max() + 1), dtype=np.int64)
    np.add.at(table, (labels[keep], true_codes), 1)
    return float(table.max(axis=1).sum() / keep.sum())


def label_quality(labels: np.ndarray, true_ids: np.ndarray) -> dict[str, float]:
    """ARI and NMI (outliers as singletons), purity and coverage of one clustering.

    labels: int[N] with -1 for outliers; true_ids: int[N].
    """
    labels, true_ids = as_numpy(labels, "labels"), as_numpy(true_ids, "true_ids")
    strict = singletons_for_outliers(labels)
    return {
        "ari": float(adjusted_rand_score(true_ids, strict)),
        "nmi": float(normalized_mutual_info_score(true_ids, strict)),
        "purity": cluster_purity(labels, true_ids),
        "coverage": float((labels >= 0).mean()) if labels.size else 0.0,
    }
