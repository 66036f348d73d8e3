"""The Jaccard encoding of each row: V (Gaussian weights on E(i)) and V_qe (query expansion).

- V[i, j] = exp(-d(i, j)) / sum_{j' in E(i)} exp(-d(i, j')) for j in E(i), else 0, with
  d(i, j) = ||x_i - x_j||^2 = 2 - 2 <x_i, x_j> for unit features.
- V_qe[i] = mean of V[j] over j in ranks[i, :k2] (query expansion).

V_qe has two kernels giving bit-for-bit the same rows: ``query_expansion_torch`` (any
device, row blocks into a dense scratch) and ``query_expansion_scipy`` (CPU: one sparse
product Q V, Q the 0/1 matrix of each row's k2 neighbours). Both add the neighbours' rows
in rank order in float32, then divide by k2.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.clustering.sparse import (
    BlockAccumulator,
    SparseRows,
    row_pointers,
    rows_per_block,
    segment_positions,
)


def squared_distances(x: Tensor, rows: Tensor, cols: Tensor, chunk_elements: int) -> Tensor:
    """(nnz,) float32 d(rows[e], cols[e]) = 2 - 2 <x_r, x_c>, gathered in chunks of about
    ``chunk_elements`` feature values."""
    out = torch.empty(rows.numel(), dtype=x.dtype, device=x.device)
    chunk = max(1, chunk_elements // max(x.shape[1], 1))
    for start in range(0, rows.numel(), chunk):
        r = x.index_select(0, rows[start : start + chunk])
        c = x.index_select(0, cols[start : start + chunk])
        out[start : start + chunk] = 2.0 - 2.0 * (r * c).sum(1)
    return out


def gaussian_rows(x: Tensor, rows: Tensor, cols: Tensor, chunk_elements: int) -> SparseRows:
    """V from E(i) given as sorted COO (rows, cols): exp(-d) normalised to sum 1 per row."""
    # d is in [0, 4] for unit vectors, so exp(-d) needs no max-shift (softmax is the same).
    weights = torch.exp(-squared_distances(x, rows, cols, chunk_elements))
    row_sums = torch.zeros(x.shape[0], dtype=weights.dtype, device=x.device)
    row_sums.index_add_(0, rows, weights)
    return SparseRows(
        row_pointers(rows, x.shape[0]), cols, weights / row_sums.index_select(0, rows)
    )


def query_expansion_torch(v: SparseRows, ranks: Tensor, k2: int, block_size: int) -> SparseRows:
    """V_qe: each block of rows gathers the k2 source rows of each of its rows and sums
    them into a dense (rows x N) scratch; the nonzeros come back out as sparse entries."""
    n = v.num_rows
    step = rows_per_block(block_size, n)
    accumulator = BlockAccumulator(step, n, v.val.device)
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        sources = ranks[start:stop, :k2].flatten()
        target = torch.arange(stop - start, device=ranks.device).repeat_interleave(k2)
        first = v.crow.index_select(0, sources)
        owner, position = segment_positions(first, v.crow.index_select(0, sources + 1) - first)
        r, c, s = accumulator.sum_by_cell(
            target.index_select(0, owner),
            v.col.index_select(0, position),
            v.val.index_select(0, position),
            stop - start,
            n,
        )
        rows_out.append(r + start)
        cols_out.append(c)
        vals_out.append(s / k2)
    rows = torch.cat(rows_out)
    return SparseRows(row_pointers(rows, n), torch.cat(cols_out), torch.cat(vals_out))


def query_expansion_scipy(v: SparseRows, ranks: Tensor, k2: int) -> SparseRows:
    """``query_expansion_torch`` on the CPU as one sparse product (Q V) / k2."""
    n = v.num_rows
    v_matrix = sp.csr_matrix((v.val.numpy(), v.col.numpy(), v.crow.numpy()), shape=(n, n))
    # Q's rows keep the rank order (not column order): the product adds V's rows in it.
    neighbours = sp.csr_matrix(
        (
            np.ones(n * k2, dtype=np.float32),
            ranks[:, :k2].cpu().numpy().ravel(),
            np.arange(0, n * k2 + 1, k2),
        ),
        shape=(n, n),
    )
    expanded = neighbours @ v_matrix
    expanded.sort_indices()
    return SparseRows(
        torch.from_numpy(expanded.indptr.astype(np.int64)),
        torch.from_numpy(expanded.indices.astype(np.int64)),
        torch.from_numpy(expanded.data) / k2,
    )
