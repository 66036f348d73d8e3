"""Cluster memories (Cluster Contrast style) for the pseudo-label cross-entropy terms.

Each epoch the clustering step returns one centroid per pseudo-identity; a
:class:`ClusterMemory` is rebuilt from them (:meth:`ClusterMemory.reset`) and, during
the epoch, scores a batch against every centroid (cross-entropy over cosine / T) and
pulls the rows of the batch's clusters towards the batch features (momentum update).
The visual memory serves L_v's cross-entropy, the textual one L_t (Eq. 7).

Label convention: ids 0..C-1 are clusters, -1 marks a DBSCAN outlier and is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.arrays import as_tensor

logger = logging.getLogger(__name__)

IGNORE_LABEL = -1


def cluster_centroids(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean feature of each cluster, L2-normalised, and the cluster sizes.

    Args:
        features: float [N, D], normally the L2-normalised features of the epoch.
        labels: integer [N], cluster ids 0..C-1 or -1 (outlier, ignored).

    Returns:
        centroids: [C, D], same dtype/device as ``features``, C = max(label) + 1
        (0 when every label is -1). A cluster id with no member gets a zero row.
        counts: long [C], members per cluster.

    Both inputs may also be NumPy arrays (or lists); anything else is a TypeError.
    """
    features = as_tensor(features, "features")
    labels = as_tensor(labels, "labels").to(features.device)
    if not features.is_floating_point():
        features = features.float()
    labels = _as_labels(features, labels)
    num_clusters = _label_range(labels)[1] + 1
    valid = labels != IGNORE_LABEL
    members, member_labels = features[valid], labels[valid]
    sums = features.new_zeros(num_clusters, features.shape[1])
    sums.index_add_(0, member_labels, members)
    counts = torch.bincount(member_labels, minlength=num_clusters)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    return F.normalize(means, dim=1), counts


def momentum_update(memory: Tensor, features: Tensor, labels: Tensor, momentum: float) -> Tensor:
    """Cluster Contrast's per-sample memory update, returned as a new tensor.

    For every sample i in batch order with label y_i != -1:
    ``m[y_i] <- normalise(momentum * m[y_i] + (1 - momentum) * f_i)``.

    Updates of different clusters commute, and only repeats of one label must follow
    batch order. So instead of B sequential steps this runs one vectorised step per
    occurrence rank (the r-th sample of every label at once): K steps for a P x K batch,
    with exactly the result of the sample-by-sample loop.

    Args:
        memory: [C, D] L2-normalised rows (left untouched).
        features: [B, D] L2-normalised, same dtype as ``memory``.
        labels: long [B], 0..C-1 or -1.
        momentum: weight of the old row, in [0, 1].

    Returns:
        [C, D] updated memory.
    """
    updated = memory.clone()
    valid = labels != IGNORE_LABEL
    features, labels = features[valid], labels[valid]
    if labels.numel() == 0:
        return updated
    rank = _occurrence_rank(labels)
    for r in range(int(rank.max()) + 1):
        at_rank = rank == r
        rows = labels[at_rank]  # distinct within one rank, so the scatter below is safe
        mixed = momentum * updated[rows] + (1.0 - momentum) * features[at_rank]
        updated[rows] = F.normalize(mixed, dim=1)
    return updated


def _occurrence_rank(labels: Tensor) -> Tensor:
    """long [B]: how many earlier samples of the batch carry the same label."""
    order = torch.argsort(labels, stable=True)  # stable: batch order inside each label
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    group_start = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(labels.numel(), device=labels.device)
    rank_sorted = rank_sorted - group_start.repeat_interleave(counts)
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


def _as_labels(features: Tensor, labels: Tensor) -> Tensor:
    """``labels`` checked against ``features`` [N, D] (shape, integer dtype) as long [N]."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(
            f"labels must be [N] = [{features.shape[0]}] to match features, "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer cluster ids, got {labels.dtype}")
    return labels.long()


def _label_range(labels: Tensor) -> tuple[int, int]:
    """(min, max) of ``labels`` with one host sync; (-1, -1) for an empty batch."""
    if labels.numel() == 0:
        return IGNORE_LABEL, IGNORE_LABEL
    low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
    if low < IGNORE_LABEL:
        raise ValueError(f"labels must be cluster ids >= 0 or {IGNORE_LABEL}, got {low}")
    return low, high


class ClusterMemory(nn.Module):
    """Centroid memory with a temperature-scaled cross-entropy and momentum updates.

    The memory is a non-persistent buffer (not in ``state_dict``): it is rebuilt from
    the centroids at the start of every epoch, and its row count C changes with the
    clustering, so a checkpointed copy could neither be reused nor loaded.
    """

    memory: Tensor

    def __init__(
        self,
        num_features: int,
        temperature: float = 0.05,
        momentum: float = 0.2,
        gather: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    ):
        super().__init__()
        # Data-parallel training: ``gather`` returns every rank's (features, labels) in rank
        # order, so each rank applies the same updates and the memories stay identical.
        self.gather = gather
        if num_features <= 0:
            raise ValueError(f"num_features must be > 0, got {num_features}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_features = num_features
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("memory", torch.zeros(0, num_features), persistent=False)

    @property
    def num_clusters(self) -> int:
        return self.memory.shape[0]

    @torch.no_grad()
    def reset(self, centroids: Tensor) -> None:
        """Replace the memory by ``centroids`` [C, D] (C >= 0), L2-normalised.

        The rows are copied to the memory's device and dtype (follow ``module.to``).
        """
        if centroids.ndim != 2 or centroids.shape[1] != self.num_features:
            raise ValueError(
                f"centroids must be [C, {self.num_features}], got shape {tuple(centroids.shape)}"
            )
        rows = centroids.detach().to(device=self.memory.device, dtype=self.memory.dtype)
        self.memory = F.normalize(rows, dim=1)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of ``features @ memory.T / temperature`` against ``labels``.

        Args:
            features: [B, D] L2-normalised (the caller normalises; done once per batch).
            labels: integer [B], cluster ids 0..C-1 or -1 (ignored).

        Returns:
            Scalar mean over the non-ignored samples. The gradient reaches ``features``
            only. Afterwards the memory is momentum-updated with the detached features
            (:func:`momentum_update`), so a forward pass changes the memory.
            An empty memory or a batch without a valid label gives an in-graph zero
            (``features.sum() * 0``): every parameter upstream still gets a (zero)
            gradient, as DDP without ``find_unused_parameters`` requires.
        """
        labels = _as_labels(features, labels)
        if features.shape[1] != self.num_features:
            raise ValueError(
                f"features must be [B, {self.num_features}], got {tuple(features.shape)}"
            )
        features = features.to(self.memory.dtype)
        max_label = _label_range(labels)[1]
        if self.num_clusters == 0 or max_label == IGNORE_LABEL:
            logger.debug(
                "cluster memory: zero loss (memory rows %d, batch %d, all labels -1: %s)",
                self.num_clusters,
                labels.numel(),
                max_label == IGNORE_LABEL,
            )
            loss = features.sum() * 0.0
        elif max_label >= self.num_clusters:
            raise ValueError(
                f"label {max_label} is outside the memory's {self.num_clusters} clusters: "
                "reset() the memory with this epoch's centroids before training on its labels"
            )
        else:
            loss = F.cross_entropy(self.logits(features, labels), labels, ignore_index=IGNORE_LABEL)
        self.update(features.detach(), labels)
        return loss

    def logits(self, features: Tensor, labels: Tensor) -> Tensor:
        """[B, C] scores of the batch against every memory row (cosine / temperature)."""
        return features @ self.memory.t() / self.temperature

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Momentum-update the rows ``labels`` [B] (-1 ignored) with ``features`` [B, D]
        (every rank's, when data-parallel). Rows may be clusters or, for an instance
        memory, sample indices."""
        # Every rank gathers on every step, also when its own batch has no valid label:
        # a rank that skipped the collective would deadlock the others.
        if self.gather is not None:
            features, labels = self.gather(features, labels)
        if self.num_clusters == 0 or not bool((labels != IGNORE_LABEL).any()):
            return
        # Out of place: autograd saved the old memory for the backward of the matmul.
        self.memory = momentum_update(self.memory, features, labels, self.momentum)

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, clusters={self.num_clusters}, "
            f"temperature={self.temperature}, momentum={self.momentum}"
        )
