"""Pseudo-labels: exact k-reciprocal Jaccard distance (sparse) and DBSCAN backends.

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
``"torch"`` (exact, sparse, CPU or CUDA, label-for-label equal to scikit-learn), ``"cuml"``
(dense device matrix, N^2 floats) and ``"auto"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("sklearn", "torch", "cuml")

# Row blocks hold a dense (rows x N) float32 scratch accumulator: cap it at 2^26 elements
# (256 MiB) whatever block_size asks for, so large N shrinks the block instead of the RAM.
_MAX_BLOCK_ELEMENTS = 1 << 26
# Cap on (i, j, l) triples expanded at once in the min-sum join (~70 bytes of
# temporaries each, so ~0.6 GiB per block at the cap).
_MAX_JOIN_TRIPLES = 1 << 23
# Cap on gathered feature elements per chunk when computing d(i, j) for sparse entries:
# cache-sized on the CPU (larger chunks measured 2-3x slower), launch-amortising on CUDA.
_MAX_GATHER_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 25}
# cuML's dense input may take at most this share of the free device memory under "auto".
_CUML_AUTO_MEMORY_SHARE = 0.5


# --------------------------------------------------------------------------------------
# Sparse row storage
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SparseRows:
    """A row-compressed N x N matrix on one device.

    crow: (N+1,) int64 row pointers; col: (nnz,) int64 column per entry, ascending
    within each row; val: (nnz,) float32 values.
    """

    crow: Tensor
    col: Tensor
    val: Tensor

    @property
    def num_rows(self) -> int:
        return self.crow.numel() - 1

    def row_of_entry(self) -> Tensor:
        """(nnz,) int64: the row index of every stored entry."""
        rows = torch.arange(self.num_rows, device=self.crow.device)
        return torch.repeat_interleave(rows, self.crow.diff(), output_size=self.col.numel())


def _row_pointers(rows: Tensor, num_rows: int) -> Tensor:
    """(num_rows+1,) int64 CSR pointers for (nnz,) int64 row ids sorted ascending."""
    counts = torch.bincount(rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _segment_positions(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the index ranges [starts[s], starts[s] + lengths[s]) of S segments.

    Returns (segment, position), both (sum(lengths),) int64: for every enumerated element
    the segment it belongs to and its index into the underlying storage.
    """
    total = int(lengths.sum())
    segment = torch.repeat_interleave(
        torch.arange(starts.numel(), device=starts.device), lengths, output_size=total
    )
    first_of_segment = (lengths.cumsum(0) - lengths)[segment]
    offset = torch.arange(total, device=starts.device) - first_of_segment
    return segment, starts[segment] + offset


class _BlockAccumulator:
    """Sums values per (row, column) of a block of rows in a reused dense scratch.

    One flat float32 buffer of ``max_rows x max_width`` is allocated once and handed back
    zeroed after each block (only the touched entries are reset), so blocks cost no
    allocation or page faults beyond the first.
    """

    def __init__(self, max_rows: int, max_width: int, device: torch.device) -> None:
        self._sums = torch.zeros(max_rows * max_width, dtype=torch.float32, device=device)

    def sum_by_cell(
        self, rows: Tensor, cols: Tensor, values: Tensor, num_rows: int, width: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sum (E,) float32 values at (E,) int64 cells (rows < num_rows, cols < width).

        Returns (rows, cols, sums) of the cells with a nonzero sum, in row-major order.
        Values are positive here, so "touched" and "nonzero" coincide.
        """
        block = self._sums[: num_rows * width]
        block.index_add_(0, rows * width + cols, values)
        cell_rows, cell_cols = block.view(num_rows, width).nonzero(as_tuple=True)
        touched = cell_rows * width + cell_cols
        sums = block[touched]
        block[touched] = 0.0
        return cell_rows, cell_cols, sums


def _rows_per_block(block_size: int, width: int) -> int:
    """Rows per block so that a dense (rows x width) float32 scratch stays under the cap."""
    return max(1, min(block_size, _MAX_BLOCK_ELEMENTS // max(width, 1)))


# --------------------------------------------------------------------------------------
# Jaccard distance
# --------------------------------------------------------------------------------------


@contextmanager
def _exact_float32_matmul(device: torch.device) -> Iterator[None]:
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
        x: (N, D) float32, L2-normalised rows.
        num_neighbours: neighbours per row including the row itself, <= N.
        block_size: rows per similarity block (scratch: block x N floats).

    Returns:
        (N, num_neighbours) int64, nearest first. Row i starts with i even when a
        duplicate of x_i exists, so i is always in its own k-reciprocal set.
    """
    n = x.shape[0]
    ranks = torch.empty((n, num_neighbours), dtype=torch.int64, device=x.device)
    step = _rows_per_block(block_size, n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        # Largest cosine = smallest 2 - 2 cos: rank on similarities directly.
        similarity = x[start:stop] @ x.T
        own = torch.arange(start, stop, device=x.device)
        similarity[own - start, own] = float("inf")
        ranks[start:stop] = similarity.topk(num_neighbours, dim=1, sorted=True).indices
    return ranks


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


def _query_expansion(v: _SparseRows, ranks: Tensor, k2: int, block_size: int) -> _SparseRows:
    """V_qe[i] = mean of V[j] over j in ranks[i, :k2]: a sparse row average.

    Each block of rows gathers the k2 source rows of each of its rows and sums them into
    a dense (rows x N) scratch; the nonzeros come back out as sparse entries.
    """
    n = v.num_rows
    step = _rows_per_block(block_size, n)
    accumulator = _BlockAccumulator(step, n, v.val.device)
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        sources = ranks[start:stop, :k2].flatten()
        target = torch.arange(stop - start, device=ranks.device).repeat_interleave(k2)
        first = v.crow[sources]
        owner, position = _segment_positions(first, v.crow[sources + 1] - first)
        r, c, s = accumulator.sum_by_cell(
            target[owner], v.col[position], v.val[position], stop - start, n
        )
        rows_out.append(r + start)
        cols_out.append(c)
        vals_out.append(s / k2)
    rows = torch.cat(rows_out)
    return _SparseRows(_row_pointers(rows, n), torch.cat(cols_out), torch.cat(vals_out))


@dataclass(frozen=True)
class _ColumnIndex:
    """Column-sorted (CSC) view of a _SparseRows, rows ascending within each column.

    ccol: (N+1,) int64 column pointers; row: (nnz,) int64; val: (nnz,) float32;
    position_of_entry: (nnz,) int64, where each CSR entry landed in this order.
    """

    ccol: Tensor
    row: Tensor
    val: Tensor
    position_of_entry: Tensor


def _column_index(m: _SparseRows) -> _ColumnIndex:
    """The inverted index of m: for each column, which rows hold it (ascending)."""
    # A stable sort by column keeps the row-major order, so rows ascend within a column.
    order = torch.sort(m.col, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    return _ColumnIndex(
        ccol=_row_pointers(m.col[order], m.num_rows),
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
    v_qe: _SparseRows, max_distance: float, block_size: int
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
    max_rows = _rows_per_block(block_size, n)
    blocks = _join_blocks(work_per_row.cpu().numpy(), max_rows, _MAX_JOIN_TRIPLES)
    accumulator = _BlockAccumulator(max_rows, n, entry_row.device)
    out_rows, out_cols, out_dist = [], [], []
    for start, stop in blocks:
        first, last = int(v_qe.crow[start]), int(v_qe.crow[stop])
        entry, position = _segment_positions(suffix_start[first:last], suffix_length[first:last])
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
    with torch.no_grad(), _exact_float32_matmul(device):
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
        v = _SparseRows(_row_pointers(rows, n), cols, _gaussian_row_weights(x, rows, cols))
    with clock("query_expansion"):
        v_qe = _query_expansion(v, ranks, k2_used, block_size)
    with clock("join"):
        upper = _jaccard_upper_triangle(v_qe, max_distance, block_size)
    with clock("to_csr"):
        distances = _mirror_to_csr(*upper, n)
    logger.debug("jaccard: nnz V=%d, V_qe=%d", v.col.numel(), v_qe.col.numel())
    return distances


# --------------------------------------------------------------------------------------
# DBSCAN backends
# --------------------------------------------------------------------------------------


def _cuml_unavailable_reason() -> str | None:
    """Why the cuML backend cannot run here, or None when it can."""
    # Checked first: importing cuml without a device can fail in odd ways, and is slow.
    if not torch.cuda.is_available():
        return "cuml needs a CUDA device and torch sees none"
    try:
        import cuml.cluster  # noqa: F401
    except (ImportError, RuntimeError, OSError) as err:  # OSError, RuntimeError: CUDA libraries
        return f"cuml does not import ({type(err).__name__}: {err})"
    return None


def _sklearn_unavailable_reason() -> str | None:
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError as err:
        return f"scikit-learn does not import ({err})"
    return None


def available_backends() -> list[str]:
    """Names of the DBSCAN backends that can run in this process, in ``BACKENDS`` order."""
    reasons = {
        "sklearn": _sklearn_unavailable_reason(),
        "torch": None,
        "cuml": _cuml_unavailable_reason(),
    }
    return [name for name in BACKENDS if reasons[name] is None]


def _dense_bytes(n: int) -> int:
    return n * n * 4


def _resolve_backend(backend: str, n: int) -> str:
    """Map a requested backend name to one that can run; raise if an explicit one cannot."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(
            f"unknown DBSCAN backend {backend!r}; allowed: auto, {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        return _auto_backend(n)
    reason = {
        "sklearn": _sklearn_unavailable_reason,
        "torch": lambda: None,
        "cuml": _cuml_unavailable_reason,
    }[backend]()
    if reason is not None:
        raise RuntimeError(
            f"DBSCAN backend {backend!r} is unavailable: {reason}. "
            f"Available here: {available_backends()}; cuml comes with the extra "
            f"'viewcoop[gpu-cu12]' or 'viewcoop[gpu-cu13]'."
        )
    return backend


def _auto_backend(n: int) -> str:
    """cuML when importable with CUDA and its dense N x N matrix fits; else torch on CUDA;
    else scikit-learn."""
    if torch.cuda.is_available():
        if _cuml_unavailable_reason() is None:
            free_bytes, _ = torch.cuda.mem_get_info()
            if _dense_bytes(n) <= _CUML_AUTO_MEMORY_SHARE * free_bytes:
                logger.info("DBSCAN backend auto -> cuml")
                return "cuml"
            logger.info(
                "DBSCAN backend auto -> torch: cuml's dense %d x %d matrix (%.1f GiB) exceeds "
                "half the free GPU memory",
                n,
                n,
                _dense_bytes(n) / 2**30,
            )
            return "torch"
        logger.info("DBSCAN backend auto -> torch (CUDA without cuml)")
        return "torch"
    logger.info("DBSCAN backend auto -> sklearn (no CUDA device)")
    return "sklearn"


@dataclass(frozen=True)
class _EpsGraph:
    """The eps-neighbourhoods scikit-learn's DBSCAN sees for a sparse precomputed matrix.

    src, dst: (E,) int64 numpy, off-diagonal stored pairs with distance <= eps (row src
    lists dst); self_neighbour: (N,) bool, whether i counts itself (its diagonal value,
    0 when not stored, is <= eps).
    """

    src: np.ndarray
    dst: np.ndarray
    self_neighbour: np.ndarray

    @property
    def num_nodes(self) -> int:
        return self.self_neighbour.shape[0]

    def degree(self) -> np.ndarray:
        """(N,) int64 neighbourhood sizes including the point itself."""
        counts = np.bincount(self.src, minlength=self.num_nodes)
        return counts + self.self_neighbour

    def is_symmetric(self) -> bool:
        n = self.num_nodes
        adjacency = sp.csr_matrix(
            (np.ones(self.src.size, dtype=np.int8), (self.src, self.dst)), shape=(n, n)
        )
        return (adjacency != adjacency.T).nnz == 0


def _eps_graph(distances: sp.csr_matrix, eps: float) -> _EpsGraph:
    """Neighbourhoods with scikit-learn's semantics: stored entries <= eps (compared in the
    matrix dtype, as sklearn does) and the point itself through its diagonal value."""
    rows = np.repeat(np.arange(distances.shape[0]), np.diff(distances.indptr))
    off_diagonal = rows != distances.indices
    within = off_diagonal & (distances.data <= eps)
    return _EpsGraph(
        src=rows[within].astype(np.int64),
        dst=distances.indices[within].astype(np.int64),
        self_neighbour=distances.diagonal() <= eps,
    )


def _dbscan_sklearn(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn DBSCAN on the sparse matrix: absent entries are not neighbours."""
    from sklearn.cluster import DBSCAN

    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
    return model.fit(distances).labels_.astype(np.int64)


def _torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _connected_component_roots(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """(N,) int64: the smallest node index of each node's connected component.

    Min-label propagation over a symmetric edge list with pointer jumping: a label is
    always a node of the same component with label[label] <= label, so jumping keeps it
    valid and shortens chains; the fixed point is the component minimum.
    """
    label = torch.arange(n, device=src.device)
    while True:
        hooked = label.scatter_reduce(0, src, label[dst], reduce="amin", include_self=True)
        jumped = hooked[hooked]
        while not torch.equal(jumped, hooked):
            hooked, jumped = jumped, jumped[jumped]
        if torch.equal(jumped, label):
            return label
        label = jumped


def _dbscan_torch(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """Exact DBSCAN on the sparse eps-graph, label-for-label equal to scikit-learn.

    sklearn grows one cluster at a time from the lowest-index unlabelled core point, so:
    clusters are numbered by their smallest core index, and a border point reachable from
    several clusters keeps the one numbered lowest.
    """
    graph = _eps_graph(distances, eps)
    if not graph.is_symmetric():
        raise ValueError(
            "the torch DBSCAN backend needs a symmetric distance matrix (neighbourhoods "
            "within eps must be mutual); symmetrise it, e.g. D.maximum(D.T), or use "
            "backend='sklearn'"
        )
    n = graph.num_nodes
    device = _torch_device()
    src = torch.from_numpy(graph.src).to(device)
    dst = torch.from_numpy(graph.dst).to(device)
    is_core = torch.from_numpy(graph.degree() >= min_samples).to(device)
    labels = torch.full((n,), -1, dtype=torch.int64, device=device)
    if not bool(is_core.any()):
        return labels.cpu().numpy()

    core_edge = is_core[src] & is_core[dst]
    roots = _connected_component_roots(n, src[core_edge], dst[core_edge])
    core_index = is_core.nonzero().squeeze(1)
    # torch.unique sorts, so cluster ids follow the smallest core index of each cluster.
    _, cluster_of_core = torch.unique(roots[core_index], sorted=True, return_inverse=True)
    labels[core_index] = cluster_of_core

    border_edge = is_core[src] & ~is_core[dst]
    unreached = torch.iinfo(torch.int64).max
    border_label = torch.full((n,), unreached, dtype=torch.int64, device=device)
    border_label.scatter_reduce_(0, dst[border_edge], labels[src[border_edge]], reduce="amin")
    is_border = ~is_core & (border_label != unreached)
    labels[is_border] = border_label[is_border]
    return labels.cpu().numpy()


def _dbscan_cuml(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """cuML DBSCAN on a dense device copy of the matrix.

    Memory: N^2 float32 on the GPU (5.3 GiB at N = 37,778; 48 GiB at N = 113,346); for
    large N prefer the "torch" backend, which stays sparse.
    """
    import cupy as cp
    from cuml.cluster import DBSCAN

    n = distances.shape[0]
    coo = distances.tocoo()
    # Absent pairs must not be neighbours: any value above eps (and above 1) will do.
    dense = cp.full((n, n), 2.0 * max(eps, 1.0), dtype=cp.float32)
    dense[cp.asarray(coo.row), cp.asarray(coo.col)] = cp.asarray(coo.data, dtype=cp.float32)
    # sklearn counts a point as its own neighbour through its diagonal (0 when absent).
    diagonal = cp.asarray(distances.diagonal(), dtype=cp.float32)
    dense[cp.arange(n), cp.arange(n)] = diagonal
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", output_type="numpy")
    labels = np.asarray(model.fit_predict(dense)).astype(np.int64)
    del dense
    return labels


_BACKEND_FUNCTIONS: dict[str, Callable[[sp.csr_matrix, float, int], np.ndarray]] = {
    "sklearn": _dbscan_sklearn,
    "torch": _dbscan_torch,
    "cuml": _dbscan_cuml,
}


def _canonical_csr(distances: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    if not sp.issparse(distances) or distances.ndim != 2:
        raise TypeError(
            f"distances must be a scipy.sparse N x N matrix, got {type(distances).__name__}"
        )
    if distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be square, got shape {distances.shape}")
    csr = sp.csr_matrix(distances)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def dbscan(
    distances: sp.spmatrix | sp.sparray,
    eps: float = 0.6,
    min_samples: int = 4,
    backend: str = "auto",
) -> np.ndarray:
    """DBSCAN on a sparse precomputed distance matrix.

    Stored entries are distances; absent entries mean "not neighbours". A point is its
    own neighbour (its diagonal value, 0 when absent, is compared with eps) and
    ``min_samples`` counts it, as in scikit-learn.

    Args:
        distances: (N, N) scipy sparse matrix, non-negative.
        eps: neighbourhood radius, inclusive (distance <= eps), > 0.
        min_samples: neighbourhood size (self included) that makes a core point, >= 1.
        backend: "auto", "sklearn", "torch" or "cuml" (see ``available_backends``).

    Returns:
        (N,) int64 labels 0..C-1, -1 for outliers.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    csr = _canonical_csr(distances)
    n = csr.shape[0]
    name = _resolve_backend(backend, n)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    start = time.perf_counter()
    labels = _BACKEND_FUNCTIONS[name](csr, eps, min_samples)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    num_outliers = int((labels == -1).sum())
    logger.info(
        "DBSCAN backend=%s N=%d eps=%g min_samples=%d: %d clusters, %d outliers, %.2f s",
        name,
        n,
        eps,
        min_samples,
        num_clusters,
        num_outliers,
        time.perf_counter() - start,
    )
    if num_outliers == n:
        logger.warning(
            "DBSCAN found no cluster: all %d points are outliers (eps=%g, min_samples=%d)",
            n,
            eps,
            min_samples,
        )
    return labels


def _edge_threshold(eps: float) -> float:
    """The smallest max_distance keeping every pair a DBSCAN at eps can call neighbours.

    Distances are float32 and sklearn compares ``data <= eps`` in float32, so keep
    d <= float32(eps): d < the next float32 above it.
    """
    above = np.nextafter(np.float32(eps), np.float32(np.inf))
    return min(1.0, float(above))


def pseudo_labels(
    features: Tensor,
    eps: float = 0.6,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    backend: str = "auto",
) -> np.ndarray:
    """Cluster features into pseudo-identities: Jaccard distance, then DBSCAN.

    Args:
        features: (N, D) float tensor; computed on its device.
        eps: DBSCAN radius on the Jaccard distance, in (0, 1).
        min_samples, k1, k2, backend: see ``dbscan`` and ``jaccard_distance``.

    Returns:
        (N,) int64 labels, -1 for outliers.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(
            f"eps must be in (0, 1), got {eps}: Jaccard distances lie in [0, 1] and pairs "
            f"sharing no k-reciprocal neighbour (distance 1) are not stored"
        )
    distances = jaccard_distance(features, k1=k1, k2=k2, max_distance=_edge_threshold(eps))
    return dbscan(distances, eps=eps, min_samples=min_samples, backend=backend)
