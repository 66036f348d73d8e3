"""Evaluation of the image encoder on a dataset's test protocol (mAP, CMC ranks).

``evaluate`` is the one evaluation everything calls (the worker loop, ``viewcoop
evaluate``, the benchmarks); ``evaluation_row`` is a training run's evaluation (plus
its feature diagnostics), the same in the Ray worker and the local loop;
``rank_query_gallery`` is the one VeRi-protocol ranking (also used by the pretraining
probe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.data.types import ReidDataset, ReidSample
from viewcoop_core.engine.batches import evaluation_loaders, extraction_batches
from viewcoop_core.engine.components import Components
from viewcoop_core.engine.diagnostics import feature_diagnostics
from viewcoop_core.engine.extract import PromptInputs, image_features
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


def evaluation_row(
    cfg: ExperimentConfig,
    comps: Components,
    device: torch.device,
    prompts: PromptInputs,
    diagnostics: bool,
) -> dict[str, float]:
    """A run's evaluation: mAP / CMC on the test protocol and, with ``diagnostics``, the
    feature diagnostics of the training set under ``prompts`` (batches from the run's
    image caches when ``train.device_cache``)."""
    batch_size = cfg.train.extract_batch_size
    row = evaluate(
        comps.model,
        comps.dataset,
        comps.test_transform,
        device,
        batch_size,
        cfg.data.num_workers,
        cfg.train.amp,
        loaders=evaluation_loaders(comps, batch_size),
    )
    if diagnostics:
        row.update(
            feature_diagnostics(
                comps.model,
                comps.dataset.train,
                extraction_batches(comps, batch_size, 0),
                prompts,
                device,
                amp=cfg.train.amp,
            )
        )
    return row
