"""Exact k-reciprocal Jaccard distance (sparse), the distance DBSCAN clusters.

The Jaccard distance is the k-reciprocal re-ranking distance of Zhong et al. (CVPR 2017)
as Cluster Contrast uses it for clustering (``compute_jaccard_distance``, no
lambda-mixing with the original distance). It is computed exactly, but never as an
N x N dense matrix: every intermediate is a sparse row set of O(N * k) entries, and the
min-sum join is done in row blocks whose scratch space is ``rows x N`` floats plus a
bounded number of (i, j) pair entries. The same torch code runs on CPU and CUDA.

Math, for L2-normalised features and d(i, j) = ||x_i - x_j||^2 = 2 - 2 cos(x_i, x_j):

- ``ranks[i]``: the nearest neighbours of i, nearest first, i itself at rank 0.
- R(i, k) = {j in ranks[i, :k+1] : i in ranks[j, :k+1]} (k-reciprocal set).
- E(i) = R(i, k1) united with every R(c, round(k1/2)), c in R(i, k1), that shares more
  than 2/3 of its members with R(i, k1).
- V[i, j] = exp(-d(i, j)) / sum_{j' in E(i)} exp(-d(i, j')) for j in E(i), else 0.
- V_qe[i] = mean of V[j] over j in ranks[i, :k2] (query expansion).
- D(i, j) = 1 - S / (2 - S), S = sum_l min(V_qe[i, l], V_qe[j, l]); D = 1 where the rows
  share no column, and those pairs are not stored.

DBSCAN backends (``dbscan(..., backend=...)``) share one seam: ``"sklearn"`` (reference),
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.clustering.knn import exact_float32_matmul, nearest_neighbour_ranks
from viewcoop_core.clustering.sparse import (
    BlockAccumulator,
    SparseRows,
    row_pointers,
    rows_per_block,
    segment_positions,
)

logger = logging.getLogger(__name__)

# Cap on (i, j, l) triples expanded at once in the min-sum join (~70 bytes of
# temporaries each, so ~0.6 GiB per block at the cap).
_MAX_JOIN_TRIPLES = 1 << 23
# Cap on gathered feature elements per chunk when computing d(i, j) for sparse entries:
# cache-sized on the CPU (larger chunks measured 2-3x slower), launch-amortising on CUDA.
_MAX_GATHER_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 25}


def _reciprocal_mask(ranks: Tensor, k: int) -> Tensor:
    """Which of the first k+1 neighbours are k-reciprocal.

    Args:
        ranks: (N, K) int64 neighbour lists, K >= k+1.
        k: neighbourhood size (lists of k+1 including self).

    Returns:
        (N, k+1) bool, True at [i, p] when i is in ranks[ranks[i, p], :k+1].
    """
    n = ranks.shape[0]
    forward = ranks[:, : k + 1]
    rows = torch.arange(n, device=ranks.device).unsqueeze(1)
    # Membership of the reversed edge (j -> i) in the set of forward edges, as a
    # binary search over sorted edge keys i * N + j: O(N k log(N k)), no N x N.
    edge_keys = (rows * n + forward).flatten().sort().values
    reversed_keys = forward * n + rows
    found_at = torch.searchsorted(edge_keys, reversed_keys).clamp_(max=edge_keys.numel() - 1)
    return edge_keys[found_at] == reversed_keys


def _expanded_reciprocal_sets(
    ranks: Tensor, k1: int, k_half: int, block_size: int
) -> tuple[Tensor, Tensor]:
    """The expanded k-reciprocal set E(i) of every row, as sorted COO entries.

    Args:
        ranks: (N, K) int64, K >= k1+1 >= k_half+1.
        k1, k_half: sizes of R(i, k1) and of the candidate sets R(c, k_half).
        block_size: rows per block (scratch ~ rows x (k1+1) x (k_half+2) int64).

    Returns:
        (rows, cols), both (nnz,) int64, sorted by row then column, no duplicates.
    """
    n = ranks.shape[0]
    sentinel = n  # larger than every index: sorts last, never a member
    is_reciprocal = _reciprocal_mask(ranks, k1)
    is_half_reciprocal = _reciprocal_mask(ranks, k_half)
    half_set_size = is_half_reciprocal.sum(1)
    all_rows, all_cols = [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        own = ranks[start:stop, : k1 + 1]
        own_valid = is_reciprocal[start:stop]
        own_set = torch.where(own_valid, own, sentinel)
        own_sorted = own_set.sort(dim=1).values
        # Candidate c = own[:, p]; its half set R(c, k_half) as (rows, k1+1, k_half+1).
        members = ranks[own, : k_half + 1]
        member_valid = is_half_reciprocal[own]
        flat_members = members.flatten(1)
        found_at = torch.searchsorted(own_sorted, flat_members).clamp_(max=k1)
        in_own_set = (own_sorted.gather(1, found_at) == flat_members).view_as(members)
        overlap = (in_own_set & member_valid).sum(2)
        # |R(c) & R(i)| > 2/3 |R(c)|, in integers.
        accepted = own_valid & (3 * overlap > 2 * half_set_size[own])
        added = torch.where(member_valid & accepted.unsqueeze(2), members, sentinel)
        pool = torch.cat([own_set, added.flatten(1)], dim=1).sort(dim=1).values
        keep = pool < sentinel
        keep[:, 1:] &= pool[:, 1:] != pool[:, :-1]
        row_ids = torch.arange(start, stop, device=ranks.device).unsqueeze(1).expand_as(pool)
        all_rows.append(row_ids[keep])
        all_cols.append(pool[keep])
    return torch.cat(all_rows), torch.cat(all_cols)


def _squared_distances(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """(nnz,) float32 d(rows[e], cols[e]) = 2 - 2 <x_r, x_c>, gathered in bounded chunks."""
    out = torch.empty(rows.numel(), dtype=x.dtype, device=x.device)
    budget = _MAX_GATHER_ELEMENTS.get(x.device.type, _MAX_GATHER_ELEMENTS["cuda"])
    chunk = max(1, budget // max(x.shape[1], 1))
    for start in range(0, rows.numel(), chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        out[start : start + chunk] = 2.0 - 2.0 * (x[r] * x[c]).sum(1)
    return out


def _gaussian_row_weights(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """V values: exp(-d(i, j)) normalised to sum 1 over each row's entries. (nnz,) float32."""
    # d is in [0, 4] for unit vectors, so exp(-d) needs no max-shift (softmax is the same).
    weights = torch.exp(-_squared_distances(x, rows, cols))
    row_sums = torch.zeros(x.shape[0], dtype=weights.dtype, device=x.device)
    row_sums.index_add_(0, rows, weights)
    return weights / row_sums[rows]


def _query_expansion(v: SparseRows, ranks: Tensor, k2: int, block_size: int) -> SparseRows:
    """V_qe[i] = mean of V[j] over j in ranks[i, :k2]: a sparse row average.

    Each block of rows gathers the k2 source rows of each of its rows and sums them into
    a dense (rows x N) scratch; the nonzeros come back out as sparse entries.
    """
    n = v.num_rows
    step = rows_per_block(block_size, n)
    accumulator = BlockAccumulator(step, n, v.val.device)
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        sources = ranks[start:stop, :k2].flatten()
        target = torch.arange(stop - start, device=ranks.device).repeat_interleave(k2)
        first = v.crow[sources]
        owner, position = segment_positions(first, v.crow[sources + 1] - first)
        r, c, s = accumulator.sum_by_cell(
            target[owner], v.col[position], v.val[position], stop - start, n
        )
        rows_out.append(r + start)
        cols_out.append(c)
        vals_out.append(s / k2)
    rows = torch.cat(rows_out)
    return SparseRows(row_pointers(rows, n), torch.cat(cols_out), torch.cat(vals_out))


@dataclass(frozen=True)
class _ColumnIndex:
    """Column-sorted (CSC) view of a SparseRows, rows ascending within each column.

    ccol: (N+1,) int64 column pointers; row: (nnz,) int64; val: (nnz,) float32;
    position_of_entry: (nnz,) int64, where each CSR entry landed in this order.
    """

    ccol: Tensor
    row: Tensor
    val: Tensor
    position_of_entry: Tensor


def _column_index(m: SparseRows) -> _ColumnIndex:
    """The inverted index of m: for each column, which rows hold it (ascending)."""
    # A stable sort by column keeps the row-major order, so rows ascend within a column.
    order = torch.sort(m.col, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    return _ColumnIndex(
        ccol=row_pointers(m.col[order], m.num_rows),
        row=m.row_of_entry()[order],
        val=m.val[order],
        position_of_entry=position,
    )


def _join_blocks(work_per_row: np.ndarray, max_rows: int, max_work: int) -> list[tuple[int, int]]:
    """Cut rows into [start, stop) blocks of at most max_rows rows and about max_work triples.

    A row whose own work exceeds max_work still gets a block of its own.
    """
    cumulative = np.concatenate([[0], np.cumsum(work_per_row)])
    blocks, start, n = [], 0, len(work_per_row)
    while start < n:
        stop = int(np.searchsorted(cumulative, cumulative[start] + max_work, side="right")) - 1
        stop = min(max(stop, start + 1), start + max_rows, n)
        blocks.append((start, stop))
        start = stop
    return blocks


def _jaccard_upper_triangle(
    v_qe: SparseRows, max_distance: float, block_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Jaccard distances D(i, j) < max_distance for j > i, plus every (i, i) with D = 0.

    The min-sum S(i, j) = sum_l min(V_qe[i, l], V_qe[j, l]) runs over the columns l that
    rows i and j share. For every entry (i, l) the inverted index lists the rows of column
    l; only the suffix with rows j >= i is taken, which halves the work and makes D
    symmetric by construction (one value per unordered pair).

    Returns:
        (rows, cols, distances): int64, int64, float32 tensors on the CPU.
    """
    n = v_qe.num_rows
    columns = _column_index(v_qe)
    entry_row = v_qe.row_of_entry()
    suffix_start = columns.position_of_entry
    suffix_length = columns.ccol[v_qe.col + 1] - suffix_start
    work_per_row = torch.zeros(n, dtype=torch.int64, device=entry_row.device)
    work_per_row.index_add_(0, entry_row, suffix_length)
    max_rows = rows_per_block(block_size, n)
    blocks = _join_blocks(work_per_row.cpu().numpy(), max_rows, _MAX_JOIN_TRIPLES)
    accumulator = BlockAccumulator(max_rows, n, entry_row.device)
    out_rows, out_cols, out_dist = [], [], []
    for start, stop in blocks:
        first, last = int(v_qe.crow[start]), int(v_qe.crow[stop])
        entry, position = segment_positions(suffix_start[first:last], suffix_length[first:last])
        i_local = entry_row[first:last][entry] - start
        j = columns.row[position]
        shared_mass = torch.minimum(v_qe.val[first:last][entry], columns.val[position])
        # Cells cover columns >= start only, since j >= i >= start.
        r, c, s = accumulator.sum_by_cell(i_local, j - start, shared_mass, stop - start, n - start)
        rows, cols = r + start, c + start
        distance = (1.0 - s / (2.0 - s)).clamp_(min=0.0)
        on_diagonal = rows == cols
        distance[on_diagonal] = 0.0
        keep = on_diagonal | (distance < max_distance)
        out_rows.append(rows[keep].cpu())
        out_cols.append(cols[keep].cpu())
        out_dist.append(distance[keep].cpu())
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_dist)


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
) -> sp.csr_matrix:
    """Exact k-reciprocal Jaccard distance as a sparse matrix (see the module docstring).

    Args:
        features: (N, D) float tensor; L2-normalised here (any float dtype).
        k1: k-reciprocal neighbourhood size; the expansion uses round(k1 / 2).
        k2: query-expansion neighbourhood size (includes the point itself).
        max_distance: keep pairs with D < max_distance, in (0, 1]. Absent pairs mean
            D >= max_distance (D = 1 for the default).
        block_size: rows per block; scratch memory is about block_size x N x 4 bytes,
            capped at 256 MiB by shrinking the block.
        device: where to compute; default ``features.device``.

    Returns:
        (N, N) float32 ``scipy.sparse.csr_matrix``, exactly symmetric, every diagonal
        entry stored explicitly as 0. For N <= k1 the neighbour lists are all N points.
    """
    _check_jaccard_arguments(features, k1, k2, max_distance)
    n = features.shape[0]
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    device = torch.device(device) if device is not None else features.device
    timings: dict[str, float] = {}
    clock = _StageClock(device, timings)
    with torch.no_grad(), exact_float32_matmul(device):
        x = torch.nn.functional.normalize(features.to(device=device, dtype=torch.float32), dim=1)
        k1_used, _, k2_used = _neighbourhood_sizes(n, k1, k2)
        with clock("knn"):
            ranks = nearest_neighbour_ranks(x, max(k1_used + 1, k2_used), block_size)
        distances = _jaccard_from_ranks(x, ranks, k1, k2, max_distance, block_size, clock)
    logger.debug("jaccard stage seconds: %s", {k: round(t, 3) for k, t in timings.items()})
    logger.info(
        "jaccard distance: N=%d k1=%d k2=%d on %s: %d stored pairs, %.2f s",
        n,
        k1,
        k2,
        device,
        distances.nnz,
        sum(timings.values()),
    )
    return distances


def _neighbourhood_sizes(n: int, k1: int, k2: int) -> tuple[int, int, int]:
    """(k1, round(k1 / 2), k2) clipped to what N points allow; rounding is half to even,
    like Cluster Contrast's np.around."""
    return min(k1, n - 1), min(round(k1 / 2), n - 1), min(k2, n)


def _jaccard_from_ranks(
    x: Tensor,
    ranks: Tensor,
    k1: int,
    k2: int,
    max_distance: float,
    block_size: int,
    clock: _StageClock,
) -> sp.csr_matrix:
    """Everything after the neighbour search, for (N, D) unit features x and (N, K) ranks
    with K >= max(k1 + 1, k2) (clipped to N)."""
    n = x.shape[0]
    k1_used, k_half, k2_used = _neighbourhood_sizes(n, k1, k2)
    with clock("expansion"):
        rows, cols = _expanded_reciprocal_sets(ranks, k1_used, k_half, block_size)
        v = SparseRows(row_pointers(rows, n), cols, _gaussian_row_weights(x, rows, cols))
    with clock("query_expansion"):
        v_qe = _query_expansion(v, ranks, k2_used, block_size)
    with clock("join"):
        upper = _jaccard_upper_triangle(v_qe, max_distance, block_size)
    with clock("to_csr"):
        distances = _mirror_to_csr(*upper, n)
    logger.debug("jaccard: nnz V=%d, V_qe=%d", v.col.numel(), v_qe.col.numel())
    return distances
