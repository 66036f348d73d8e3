"""How far a backbone is from re-id before any re-id training, on a synthetic set:
zero-training mAP / rank-1 and the ARI of its DBSCAN pseudo-labels against the true ids."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import adjusted_rand_score

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.config import ClusterConfig
from viewcoop_core.data.datasets import load_synthetic
from viewcoop_core.data.transforms import build_test_transform
from viewcoop_core.engine.evaluate import rank_query_gallery
from viewcoop_core.engine.extract import image_features
from viewcoop_core.models.clip import ClipBundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterProbe:
    """DBSCAN pseudo-labels of the train features against the true identities."""

    eps: float
    k1: int
    adjusted_rand_index: float
    num_clusters: int
    outlier_fraction: float


@dataclass(frozen=True)
class ReidProbe:
    """How far a backbone is from re-id before any re-id training."""

    mAP: float
    rank1: float
    num_train_ids: int
    clustering: tuple[ClusterProbe, ...]


def reid_probe(
    bundle: ClipBundle,
    data_root: str | os.PathLike,
    cluster_settings: Sequence[tuple[float, int]] = ((0.6, 20),),
    min_samples: int = 4,
    k2: int = 6,
) -> ReidProbe:
    """Zero-training re-id quality of ``bundle``'s image features on a synthetic set.

    mAP / rank-1 rank the gallery for each query by cosine distance (VeRi protocol);
    for each ``(eps, k1)`` in ``cluster_settings`` the train features are clustered
    with ``viewcoop_core.clustering.pseudo_labels`` (sklearn DBSCAN) and compared with
    the true ids by the adjusted Rand index (outliers count as one extra label).
    """
    dataset = load_synthetic(data_root)
    model = bundle.model.eval()
    device = next(model.parameters()).device
    side = (bundle.image_size, bundle.image_size)
    transform = build_test_transform(side, bundle.mean, bundle.std)

    def features(samples):
        return image_features(model, samples, transform, device, amp=False).cpu()

    ranking = rank_query_gallery(
        features(dataset.query), features(dataset.gallery), dataset.query, dataset.gallery
    )
    train = features(dataset.train)
    true_ids = np.array([s.pid for s in dataset.train])
    clustering = []
    for eps, k1 in cluster_settings:
        settings = ClusterConfig(eps=eps, min_samples=min_samples, k1=k1, k2=k2, backend="sklearn")
        labels = pseudo_labels(train, settings)
        clustering.append(
            ClusterProbe(
                eps=eps,
                k1=k1,
                adjusted_rand_index=float(adjusted_rand_score(true_ids, labels)),
                num_clusters=int(labels.max()) + 1,
                outlier_fraction=float(np.mean(labels < 0)),
            )
        )
    return ReidProbe(
        mAP=ranking["mAP"],
        rank1=float(ranking["cmc"][0]),
        num_train_ids=len(set(true_ids.tolist())),
        clustering=tuple(clustering),
    )


def log_probe(name: str, probe: ReidProbe) -> None:
    logger.info("%s: zero-training mAP %.4f, rank-1 %.4f", name, probe.mAP, probe.rank1)
    for c in probe.clustering:
        logger.info(
            "%s: eps %.2f k1 %2d -> ARI %.3f, %d clusters (true ids %d), %.0f %% outliers",
            name,
            c.eps,
            c.k1,
            c.adjusted_rand_index,
            c.num_clusters,
            probe.num_train_ids,
            100 * c.outlier_fraction,
        )
