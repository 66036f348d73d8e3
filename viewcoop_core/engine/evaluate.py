"""Evaluation of the image encoder on a dataset's test protocol (mAP, CMC ranks).

``evaluate`` is the one evaluation everything calls (the worker loop, ``viewcoop
evaluate``, the benchmarks); ``rank_query_gallery`` is the one VeRi-protocol ranking
(also used by the pretraining probe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from viewcoop_core.data.types import ReidDataset, ReidSample
from viewcoop_core.engine.extract import image_features
from viewcoop_core.metrics import pairwise_distance, rank_metrics, summarize, vehicleid_metrics


def rank_query_gallery(
    query_features: Tensor,
    gallery_features: Tensor,
    query: Sequence[ReidSample],
    gallery: Sequence[ReidSample],
) -> dict:
    """VeRi protocol ranking of [Q, D] query against [G, D] gallery features (cosine):
    gallery items of the same id and camera as the query are removed."""
    return rank_metrics(
        pairwise_distance(query_features, gallery_features),
        [s.pid for s in query],
        [s.pid for s in gallery],
        [s.camid for s in query],
        [s.camid for s in gallery],
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ReidDataset,
    transform,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    amp: bool = True,
    loaders: Callable[[Sequence[ReidSample]], Iterable[dict]] | None = None,
) -> dict[str, float]:
    """mAP, R1, R5, R10 (fractions) and ``eval_s`` of the image encoder on the dataset's
    test protocol (VeRi query/gallery, or VehicleID's random gallery splits).

    Features stay on ``device`` and the ranking runs there, batched over queries.
    ``loaders``: samples -> their batches in order (e.g. a ``DeviceImageCache``);
    default: the files through ``transform``."""
    start = time.perf_counter()

    def features(samples):
        loader = None if loaders is None else loaders(samples)
        return image_features(
            model, samples, transform, device, batch_size, num_workers, amp, loader
        )

    if dataset.protocol == "vehicleid":
        result = vehicleid_metrics(features(dataset.test), [s.pid for s in dataset.test])
    else:
        result = rank_query_gallery(
            features(dataset.query), features(dataset.gallery), dataset.query, dataset.gallery
        )
    metrics = summarize(result)
    metrics["eval_s"] = time.perf_counter() - start
    return metrics
