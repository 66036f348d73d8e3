"""Where a run's image batches come from, decided in one place.

By default the files are read, decoded and transformed per batch by a ``DataLoader``.
With ``train.device_cache`` every image is decoded once into the run's ``ImageCaches``
(uint8 on the device) and batches are normalised, and for training augmented, there
(``engine.device_cache``): on a GPU the host's few cores no longer feed it, and on a
2-core CPU the epochs stop re-decoding the same files (the demo decodes each image once
instead of ~2-3 times per epoch). The Ray worker loop, the Ray-free local loop and the
evaluation read their batches through these functions, so both paths stay one switch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from viewcoop_core.config import TrainConfig
from viewcoop_core.data.types import ReidSample
from viewcoop_core.engine.components import Components
from viewcoop_core.engine.device_cache import pk_batches
from viewcoop_core.engine.extract import make_loader
from viewcoop_core.engine.train import pk_loader


class Reiterable:
    """Batches that start afresh on every ``iter`` (as a ``DataLoader`` does), so a caller
    may take one batch to look at and then iterate over all of them."""

    def __init__(self, make: Callable[[], Iterator[dict]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[dict]:
        return self.make()


def extraction_batches(
    comps: Components, batch_size: int, num_workers: int, indices: Sequence[int] | None = None
) -> Iterable[dict]:
    """Evaluation-transform batches of the training images in order (or of ``indices``:
    a worker's shard); ``batch["index"]`` indexes the training set."""
    if comps.caches is not None:
        return Reiterable(lambda: comps.caches.train.batches(batch_size, indices))
    return make_loader(comps.dataset.train, comps.test_transform, batch_size, num_workers, indices)


def evaluation_loaders(
    comps: Components, batch_size: int
) -> Callable[[Sequence[ReidSample]], Iterable[dict]] | None:
    """``evaluate``'s ``loaders`` (test samples -> their batches) from the test cache, or
    None: the files through the test transform."""
    if comps.caches is None:
        return None
    return lambda samples: comps.caches.test.loader_for(samples, batch_size)


def training_batches(
    comps: Components,
    labels: np.ndarray,
    batch_size: int,
    train: TrainConfig,
    seed: int,
    epoch: int,
    num_workers: int,
) -> Iterable[dict]:
    """``train.iters`` augmented P x K batches of the training images under ``labels``."""
    if comps.caches is not None:
        cache = comps.caches.train
        return Reiterable(
            lambda: pk_batches(
                cache,
                labels,
                batch_size,
                train.num_instances,
                train.iters,
                seed,
                epoch,
                crop_p=train.crop_p,
            )
        )
    return pk_loader(
        comps.dataset.train,
        labels,
        comps.train_transform,
        batch_size,
        train,
        seed=seed,
        epoch=epoch,
        num_workers=num_workers,
    )
