"""Exact k-reciprocal Jaccard distance (sparse), the distance DBSCAN clusters.

The Jaccard distance is the k-reciprocal re-ranking distance of Zhong et al. (CVPR 2017)
as Cluster Contrast uses it for clustering (``compute_jaccard_distance``, no
lambda-mixing with the original distance). It is computed exactly, but never as an
N x N dense matrix: every intermediate is a sparse row set of O(N * k) entries.

Stages (timed, logged at DEBUG): ``knn`` (blocked matmul + top-k, ``knn.py``: the floor),
``expansion`` (E(i), ``neighbourhoods.py``), ``weights`` and ``query_expansion`` (V and
V_qe, ``encoding.py``), ``join`` (the min-sum, pruned exactly by a heavy/light bound,
``join.py``). Each sparse stage has two kernels with bit-for-bit the same output: torch
(any device; the only one on CUDA) and, on the CPU, SciPy's compiled sparse products,
run in row chunks on Python threads (``threads.py``; torch's own threads measured slower
there). The CPU path gives the same matrix, value for value, as the unpruned torch path.

Math, for L2-normalised features and d(i, j) = ||x_i - x_j||^2 = 2 - 2 cos(x_i, x_j):

- ``ranks[i]``: the nearest neighbours of i, nearest first, i itself at rank 0.
- R(i, k) = {j in ranks[i, :k+1] : i in ranks[j, :k+1]} (k-reciprocal set).
- E(i) = R(i, k1) united with every R(c, round(k1/2)), c in R(i, k1), that shares more
  than 2/3 of its members with R(i, k1).
- V[i, j] = exp(-d(i, j)) / sum_{j' in E(i)} exp(-d(i, j')) for j in E(i), else 0.
- V_qe[i] = mean of V[j] over j in ranks[i, :k2] (query expansion).
- D(i, j) = 1 - S / (2 - S), S = sum_l min(V_qe[i, l], V_qe[j, l]); D = 1 where the rows
  share no column, and those pairs are not stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.arrays import feature_matrix
from viewcoop_core.clustering.encoding import (
    gaussian_rows,
    query_expansion_scipy,
    query_expansion_torch,
)
from viewcoop_core.clustering.join import jaccard_pairs
from viewcoop_core.clustering.knn import exact_float32_matmul, nearest_neighbour_ranks
from viewcoop_core.clustering.neighbourhoods import expanded_sets_scipy, expanded_sets_torch
from viewcoop_core.clustering.threads import single_threaded_ops
from viewcoop_core.vocabulary import JACCARD_NEIGHBOURHOODS

logger = logging.getLogger(__name__)

# Cap on entries expanded at once by a block of the query expansion and the join ((i, j, l)
# triples or pair entries; ~70 bytes of temporaries each, so ~140 MiB per CPU block). On
# CUDA blocks are this many times larger (fewer kernel launches; memory is plentiful).
_MAX_JOIN_TRIPLES = 1 << 21
_CUDA_BLOCK_SCALE = 4
# Cap on the (rows x N) scratch cells of the torch kernels (8 bytes each: 128 MiB on the
# CPU; on CUDA _CUDA_BLOCK_SCALE times that).
_MAX_JOIN_SCRATCH = 1 << 24
# Cap on gathered feature elements per chunk when computing d(i, j) for sparse entries:
# cache-sized on the CPU (larger chunks measured 2-3x slower), launch-amortising on CUDA.
_MAX_GATHER_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 25}
# Which kernels compute the sparse stages: "torch" (any device) or "scipy" (CPU only,
# compiled sparse products, threaded); "auto" = scipy on the CPU, torch elsewhere.
KERNELS = ("auto", "torch", "scipy")


def _mirror_to_csr(rows: Tensor, cols: Tensor, distances: Tensor, n: int) -> sp.csr_matrix:
    """Symmetric N x N CSR from upper-triangle entries (diagonal included once)."""
    rows_np, cols_np, dist_np = rows.numpy(), cols.numpy(), distances.numpy()
    off_diagonal = rows_np != cols_np
    all_rows = np.concatenate([rows_np, cols_np[off_diagonal]])
    all_cols = np.concatenate([cols_np, rows_np[off_diagonal]])
    all_dist = np.concatenate([dist_np, dist_np[off_diagonal]])
    # COO -> CSR keeps explicit zeros: the diagonal stays stored as 0.
    return sp.coo_matrix((all_dist, (all_rows, all_cols)), shape=(n, n)).tocsr()


class _StageClock:
    """Context-manager factory timing named stages (synchronising CUDA for honest numbers)."""

    def __init__(self, device: torch.device, sink: dict[str, float]) -> None:
        self._device = device
        self._sink = sink

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._sink[name] = time.perf_counter() - start


def _check_jaccard_arguments(features: Tensor, k1: int, k2: int, max_distance: float) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 < max_distance <= 1.0:
        raise ValueError(
            f"max_distance must be in (0, 1] (Jaccard distances lie in [0, 1]), got {max_distance}"
        )


def jaccard_distance(
    features: Tensor,
    k1: int = 30,
    k2: int = 6,
    max_distance: float = 1.0,
    block_size: int = 1024,
    device: torch.device | str | None = None,
    neighbourhood: str = "k1+1",
) -> sp.csr_matrix:
    """Exact k-reciprocal Jaccard distance as a sparse matrix (see the module docstring).

    Args:
        features: (N, D) floats: a tensor, a NumPy array or a nested list (every value
            finite); L2-normalised here (any float dtype).
        k1: k-reciprocal neighbourhood size; the expansion uses round(k1 / 2).
        k2: query-expansion neighbourhood size (includes the point itself).
        max_distance: keep pairs with D < max_distance, in (0, 1]. Absent pairs mean
            D >= max_distance (D = 1 for the default).
        block_size: rows per block; scratch memory is about block_size x N x 4 bytes,
            capped at 256 MiB by shrinking the block.
        device: where to compute; default ``features.device``.
        neighbourhood: "k1+1": each point's list holds itself and its k1 nearest (the
            re-ranking paper's code); "k1": itself and k1 - 1 others (Cluster Contrast's
            faiss path searches k1 neighbours, self included). The half-size sets and
            the query expansion are the same in both.

    Returns:
        (N, N) float32 ``scipy.sparse.csr_matrix``, exactly symmetric, every diagonal
        entry stored explicitly as 0. For N <= k1 the neighbour lists are all N points.
    """
    features = feature_matrix(features, "features")
    n = features.shape[0]
    timings: dict[str, float] = {}
    rows, cols, distances = jaccard_upper_pairs(
        features, k1, k2, max_distance, block_size, device, timings, neighbourhood
    )
    start = time.perf_counter()
    matrix = _mirror_to_csr(rows.cpu(), cols.cpu(), distances.cpu(), n)
    timings["to_csr"] = time.perf_counter() - start
    logger.debug("jaccard stage seconds: %s", {k: round(t, 3) for k, t in timings.items()})
    return matrix


def jaccard_upper_pairs(
    features: Tensor,
    k1: int = 30,
    k2: int = 6,
    max_distance: float = 1.0,
    block_size: int = 1024,
    device: torch.device | str | None = None,
    timings: dict[str, float] | None = None,
    neighbourhood: str = "k1+1",
) -> tuple[Tensor, Tensor, Tensor]:
    """``jaccard_distance``'s pairs, left on the compute device: the upper triangle.

    Arguments as ``jaccard_distance``; ``timings`` (if given) receives seconds per stage.

    Returns:
        (rows, cols, distances): (P,) int64, int64, float32 on the device, rows <= cols:
        every (i, i) with distance 0 and every pair i < j with distance < max_distance.
    """
    features = feature_matrix(features, "features")
    _check_jaccard_arguments(features, k1, k2, max_distance)
    if neighbourhood not in JACCARD_NEIGHBOURHOODS or (neighbourhood == "k1" and k1 < 2):
        raise ValueError(
            f"neighbourhood={neighbourhood!r} with k1={k1}: expected one of "
            f"{JACCARD_NEIGHBOURHOODS} ('k1' needs k1 >= 2)"
        )
    n = features.shape[0]
    device = torch.device(device) if device is not None else features.device
    if n == 0:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty, empty.float()
    timings = {} if timings is None else timings
    clock = _StageClock(device, timings)
    with torch.no_grad(), exact_float32_matmul(device):
        x = torch.nn.functional.normalize(features.to(device=device, dtype=torch.float32), dim=1)
        k1_used, _, k2_used = _neighbourhood_sizes(n, k1, k2, neighbourhood)
        with clock("knn"):
            ranks = nearest_neighbour_ranks(x, max(k1_used + 1, k2_used), block_size)
        upper = _upper_pairs_from_ranks(
            x, ranks, k1, k2, max_distance, block_size, clock, neighbourhood=neighbourhood
        )
    logger.info(
        "jaccard distance: N=%d k1=%d k2=%d on %s: %d stored pairs (upper), %.2f s",
        n,
        k1,
        k2,
        device,
        upper[0].numel(),
        sum(timings.values()),
    )
    return upper


def _neighbourhood_sizes(
    n: int, k1: int, k2: int, neighbourhood: str = "k1+1"
) -> tuple[int, int, int]:
    """(neighbours beyond the point itself: k1, or k1 - 1 for "k1"; round(k1 / 2); k2)
    clipped to what N points allow; rounding is half to even, like Cluster Contrast's
    np.around."""
    main = k1 if neighbourhood == "k1+1" else k1 - 1
    return min(main, n - 1), min(round(k1 / 2), n - 1), min(k2, n)


def _resolve_kernels(kernels: str, device: torch.device) -> str:
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "scipy" and device.type != "cpu":
        raise ValueError(f"the scipy kernels run on the CPU only, not on {device}")
    if kernels == "auto":
        return "scipy" if device.type == "cpu" else "torch"
    return kernels


def _upper_pairs_from_ranks(
    x: Tensor,
    ranks: Tensor,
    k1: int,
    k2: int,
    max_distance: float,
    block_size: int,
    clock: _StageClock,
    kernels: str = "auto",
    neighbourhood: str = "k1+1",
) -> tuple[Tensor, Tensor, Tensor]:
    """Everything after the neighbour search, for (N, D) unit features x and (N, K) ranks
    with K >= max(k1 + 1, k2) (clipped to N): the upper-triangle pairs (``join``) on x's
    device."""
    kernels = _resolve_kernels(kernels, x.device)
    if kernels == "torch":
        return _sparse_stages(
            x, ranks, k1, k2, max_distance, block_size, clock, kernels, 1, neighbourhood
        )
    with single_threaded_ops() as threads:
        return _sparse_stages(
            x, ranks, k1, k2, max_distance, block_size, clock, kernels, threads, neighbourhood
        )


def _sparse_stages(
    x: Tensor,
    ranks: Tensor,
    k1: int,
    k2: int,
    max_distance: float,
    block_size: int,
    clock: _StageClock,
    kernels: str,
    threads: int,
    neighbourhood: str = "k1+1",
) -> tuple[Tensor, Tensor, Tensor]:
    n = x.shape[0]
    k1_used, k_half, k2_used = _neighbourhood_sizes(n, k1, k2, neighbourhood)
    gather = _MAX_GATHER_ELEMENTS.get(x.device.type, _MAX_GATHER_ELEMENTS["cuda"])
    with clock("expansion"):
        if kernels == "scipy":
            rows, cols = expanded_sets_scipy(ranks, k1_used, k_half)
        else:
            rows, cols = expanded_sets_torch(ranks, k1_used, k_half, block_size)
    with clock("weights"):
        v = gaussian_rows(x, rows, cols, gather, threads)
    scale = _CUDA_BLOCK_SCALE if x.device.type == "cuda" else 1
    max_rows = max(1, min(block_size * scale, _MAX_JOIN_SCRATCH * scale // n))
    max_entries = _MAX_JOIN_TRIPLES * scale
    with clock("query_expansion"):
        if kernels == "scipy":
            v_qe = query_expansion_scipy(v, ranks, k2_used, block_size, threads)
        else:
            v_qe = query_expansion_torch(v, ranks, k2_used, max_rows, max_entries)
    with clock("join"):
        upper = jaccard_pairs(v_qe, max_distance, max_rows, max_entries, kernels, threads)
    logger.debug("jaccard: nnz V=%d, V_qe=%d", v.col.numel(), v_qe.col.numel())
    return upper


def _jaccard_from_ranks(
    x: Tensor,
    ranks: Tensor,
    k1: int,
    k2: int,
    max_distance: float,
    block_size: int,
    clock: _StageClock,
    kernels: str = "auto",
) -> sp.csr_matrix:
    """``_upper_pairs_from_ranks`` mirrored into the symmetric N x N CSR."""
    upper = _upper_pairs_from_ranks(x, ranks, k1, k2, max_distance, block_size, clock, kernels)
    with clock("to_csr"):
        return _mirror_to_csr(*(t.cpu() for t in upper), x.shape[0])
