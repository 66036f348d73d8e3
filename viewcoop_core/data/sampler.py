"""P x K pseudo-identity batch sampler for cluster-based unsupervised re-id training."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch.utils.data

logger = logging.getLogger(__name__)


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P pseudo-identities x K images each, for ``DataLoader(batch_sampler=...)``.

    Each batch holds ``P = batch_size // num_instances`` distinct identities and
    ``K = num_instances`` dataset indices per identity, grouped: the K indices of
    the first identity, then the K of the second, and so on. Samples labelled -1
    (DBSCAN outliers) are never drawn.

    For one identity, the first (anchor) image is drawn uniformly; the other K - 1
    come, in this order of preference, from cameras other than the anchor's (one
    image per camera before a second from any camera, so an identity seen by at
    least K cameras yields K distinct cameras), then from the anchor's camera, and
    only when the identity has fewer than K images, again from all its images
    (with replacement). Cross-camera positives are what the triplet and graph
    losses need to learn camera-invariant features.

    Identities are visited in shuffled cycles: every identity appears once per
    cycle, so over an epoch each is drawn about ``num_iters * P / num_identities``
    times. An epoch is exactly ``num_iters`` batches; the random stream depends
    only on ``(seed, epoch)`` (see ``set_epoch``).
    """

    def __init__(
        self,
        labels: Sequence[int],
        camids: Sequence[int],
        batch_size: int = 64,
        num_instances: int = 4,
        num_iters: int = 600,
        seed: int = 0,
    ) -> None:
        labels_array = np.asarray(labels, dtype=np.int64)
        camids_array = np.asarray(camids, dtype=np.int64)
        if labels_array.ndim != 1 or labels_array.shape != camids_array.shape:
            raise ValueError(
                f"labels and camids must be 1-D and of equal length, got shapes "
                f"{labels_array.shape} and {camids_array.shape}"
            )
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances "
                f"({num_instances}): a batch holds batch_size // num_instances identities "
                "with num_instances images each"
            )
        if num_iters < 1:
            raise ValueError(f"num_iters must be >= 1, got {num_iters}")

        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_identities_per_batch = batch_size // num_instances
        self.num_iters = num_iters
        self.seed = seed
        self.epoch = 0
        self._camids = camids_array
        self._indices_by_identity = _group_by_identity(labels_array)
        self._identities = np.array(sorted(self._indices_by_identity), dtype=np.int64)

        if len(self._identities) < self.num_identities_per_batch:
            raise ValueError(
                f"PKSampler needs at least P = batch_size // num_instances = "
                f"{self.num_identities_per_batch} identities with a non-outlier sample, "
                f"got {len(self._identities)} (of {labels_array.size} samples, "
                f"{int((labels_array < 0).sum())} outliers); lower batch_size or handle "
                "the degenerate clustering before building the sampler"
            )
        logger.debug(
            "PKSampler: %d identities, P=%d, K=%d, %d iterations",
            len(self._identities),
            self.num_identities_per_batch,
            num_instances,
            num_iters,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch``; iteration is reproducible per (seed, epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_iters

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        identity_stream = _identity_cycles(self._identities, self.num_identities_per_batch, rng)
        for _ in range(self.num_iters):
            batch: list[int] = []
            for identity in next(identity_stream):
                batch.extend(self._instances_of(int(identity), rng).tolist())
            yield batch

    def _instances_of(self, identity: int, rng: np.random.Generator) -> np.ndarray:
        """K dataset indices of one identity: anchor first, then preferred positives.

        Returns [K] int64.
        """
        indices = self._indices_by_identity[identity]
        k = self.num_instances
        anchor_position = rng.integers(len(indices))
        anchor = indices[anchor_position]
        others = rng.permutation(np.delete(indices, anchor_position))
        cams = self._camids[others]
        same_camera = cams == self._camids[anchor]
        # Sort key, most significant first: other camera before anchor camera, then
        # the image's rank among its camera's images in this random order (so the
        # first image of every camera comes before any second one), then the random
        # order itself (lexsort is stable).
        ranked = others[np.lexsort((_rank_within_group(cams), same_camera))]
        chosen = ranked[: k - 1]
        if len(chosen) < k - 1:
            refill = rng.choice(indices, size=k - 1 - len(chosen), replace=True)
            chosen = np.concatenate([chosen, refill])
        return np.concatenate([[anchor], chosen]).astype(np.int64)


def _group_by_identity(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Dataset indices of each non-outlier label: {label: [n_label] int64, ascending}."""
    valid = np.flatnonzero(labels >= 0)
    if valid.size == 0:
        return {}
    order = valid[np.argsort(labels[valid], kind="stable")]
    unique, starts = np.unique(labels[order], return_index=True)
    return {
        int(label): group for label, group in zip(unique, np.split(order, starts[1:]), strict=True)
    }


def _rank_within_group(groups: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same group value.

    ``groups`` is [n] int; returns [n] int64, e.g. [5, 7, 5, 5, 7] -> [0, 0, 1, 2, 1].
    """
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    group_start = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    group_sizes = np.diff(np.r_[group_start, len(groups)])
    rank_sorted = np.arange(len(groups)) - np.repeat(group_start, group_sizes)
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = rank_sorted
    return ranks


def _identity_cycles(
    identities: np.ndarray, per_batch: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Endless stream of batches of ``per_batch`` distinct identities, in shuffled cycles.

    Each cycle is a fresh permutation of all identities. A batch that straddles two
    cycles takes the rest of the old cycle and then the first identities of the new
    one that are not already in the batch; those skipped stay at the front of the new
    cycle, so every identity still appears exactly once per cycle.
    """
    pending = rng.permutation(identities)
    while True:
        if len(pending) >= per_batch:
            batch, pending = pending[:per_batch], pending[per_batch:]
        else:
            fresh = rng.permutation(identities)
            available = fresh[~np.isin(fresh, pending)]
            taken = available[: per_batch - len(pending)]
            batch = np.concatenate([pending, taken])
            pending = fresh[~np.isin(fresh, taken)]
        yield batch
