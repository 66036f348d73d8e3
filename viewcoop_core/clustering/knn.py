"""Exact k nearest neighbours on L2-normalised features: blocked matmul + top-k.

The first stage of the Jaccard distance, and its floor: nothing after it may cost more
than a small multiple of this (``benchmarks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from viewcoop_core.arrays import feature_matrix
from viewcoop_core.clustering.sparse import rows_per_block


@contextmanager
def exact_float32_matmul(device: torch.device) -> Iterator[None]:
    """Full-precision fp32 matmuls: no autocast, no TF32, whatever the caller enabled.

    Neighbour ranks are compared across near-ties; bf16/TF32 products reorder them.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


def nearest_neighbour_ranks(x: Tensor, num_neighbours: int, block_size: int = 1024) -> Tensor:
    """Exact nearest neighbours by squared euclidean distance, self first.

    Args:
        x: (N, D) float32, L2-normalised rows: a tensor, or a NumPy array / nested list
            (read as a CPU tensor).
        num_neighbours: neighbours per row including the row itself, <= N.
        block_size: rows per similarity block (scratch: block x N floats).

    Returns:
        (N, num_neighbours) int64, nearest first. Row i starts with i even when a
        duplicate of x_i exists, so i is always in its own k-reciprocal set.
    """
    x = feature_matrix(x, "x").float()
    n = x.shape[0]
    if not 1 <= num_neighbours <= n:
        raise ValueError(f"num_neighbours={num_neighbours} must be in 1..N={n}")
    ranks = torch.empty((n, num_neighbours), dtype=torch.int64, device=x.device)
    step = rows_per_block(block_size, n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        # Largest cosine = smallest 2 - 2 cos: rank on similarities directly.
        similarity = x[start:stop] @ x.T
        own = torch.arange(start, stop, device=x.device)
        similarity[own - start, own] = float("inf")
        ranks[start:stop] = similarity.topk(num_neighbours, dim=1, sorted=True).indices
    return ranks
