"""The Jaccard encoding of each row: V (Gaussian weights on E(i)) and V_qe (query expansion).

- V[i, j] = exp(-d(i, j)) / sum_{j' in E(i)} exp(-d(i, j')) for j in E(i), else 0, with
  d(i, j) = ||x_i - x_j||^2 = 2 - 2 <x_i, x_j> for unit features.
- V_qe[i] = mean of V[j] over j in ranks[i, :k2] (query expansion).

V_qe has two kernels giving bit-for-bit the same rows: ``query_expansion_torch`` (any
device, row blocks summed per cell in a scratch) and ``query_expansion_scipy`` (CPU: one sparse
product Q V, Q the 0/1 matrix of each row's k2 neighbours). Both add the neighbours' rows
in rank order in float32, then divide by k2.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.clustering.sparse import (
    CellScratch,
    SparseRows,
    row_blocks,
    row_pointers,
    segment_positions,
)
from viewcoop_core.clustering.threads import chunks, thread_map


def squared_distances(
    x: Tensor, rows: Tensor, cols: Tensor, chunk_elements: int, threads: int = 1
) -> Tensor:
    """(nnz,) float32 d(rows[e], cols[e]) = 2 - 2 <x_r, x_c>, gathered in chunks of about
    ``chunk_elements`` feature values, on ``threads`` Python threads."""
    out = torch.empty(rows.numel(), dtype=x.dtype, device=x.device)

    def chunk(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        r = x.index_select(0, rows[start:stop])
        c = x.index_select(0, cols[start:stop])
        out[start:stop] = 2.0 - 2.0 * (r * c).sum(1)

    thread_map(chunk, chunks(rows.numel(), chunk_elements // max(x.shape[1], 1)), threads)
    return out


def gaussian_rows(
    x: Tensor, rows: Tensor, cols: Tensor, chunk_elements: int, threads: int = 1
) -> SparseRows:
    """V from E(i) given as sorted COO (rows, cols): exp(-d) normalised to sum 1 per row."""
    # d is in [0, 4] for unit vectors, so exp(-d) needs no max-shift (softmax is the same).
    weights = torch.exp(-squared_distances(x, rows, cols, chunk_elements, threads))
    row_sums = torch.zeros(x.shape[0], dtype=weights.dtype, device=x.device)
    row_sums.index_add_(0, rows, weights)
    return SparseRows(
        row_pointers(rows, x.shape[0]), cols, weights / row_sums.index_select(0, rows)
    )


def query_expansion_torch(
    v: SparseRows, ranks: Tensor, k2: int, max_rows: int, max_entries: int
) -> SparseRows:
    """V_qe with torch ops: each block of rows gathers the k2 source rows of each of its
    rows and sums them per (row, column) cell in a scratch of max_rows x N cells."""
    n = v.num_rows
    scratch = CellScratch(max_rows * n, v.val.device)
    length = v.crow.diff()
    work = length.index_select(0, ranks[:, :k2].flatten()).view(n, k2).sum(1)
    rows_out, cols_out, vals_out = [], [], []
    for start, stop in row_blocks(work.cpu().numpy(), max_rows, max_entries):
        sources = ranks[start:stop, :k2].flatten()
        owner, position = segment_positions(
            v.crow.index_select(0, sources), length.index_select(0, sources)
        )
        target = owner.div(k2, rounding_mode="floor")  # the block row each source serves
        cells = target.mul_(n).add_(v.col.index_select(0, position))
        totals = scratch.totals(cells, v.val.index_select(0, position))
        kept = scratch.one_per_cell(cells)
        cells = cells.index_select(0, kept)
        rows_out.append(cells.div(n, rounding_mode="floor").add_(start))
        cols_out.append(cells.remainder(n))
        vals_out.append(totals.index_select(0, kept) / k2)
    rows = torch.cat(rows_out)
    return SparseRows(row_pointers(rows, n), torch.cat(cols_out), torch.cat(vals_out))


def query_expansion_scipy(
    v: SparseRows, ranks: Tensor, k2: int, chunk_rows: int, threads: int = 1
) -> SparseRows:
    """``query_expansion_torch`` on the CPU as a sparse product (Q V) / k2, in row chunks
    on ``threads`` threads."""
    n = v.num_rows
    v_matrix = sp.csr_matrix((v.val.numpy(), v.col.numpy(), v.crow.numpy()), shape=(n, n))
    sources = ranks[:, :k2].cpu().numpy()

    def chunk(bounds: tuple[int, int]) -> sp.csr_matrix:
        start, stop = bounds
        # Q's rows keep the rank order (not column order): the product adds V's rows in it.
        neighbours = sp.csr_matrix(
            (
                np.ones((stop - start) * k2, dtype=np.float32),
                sources[start:stop].ravel(),
                np.arange(0, (stop - start) * k2 + 1, k2),
            ),
            shape=(stop - start, n),
        )
        product = neighbours @ v_matrix
        product.sort_indices()
        return product

    parts = thread_map(chunk, chunks(n, chunk_rows), threads)
    lengths = np.concatenate([[0]] + [np.diff(p.indptr) for p in parts])
    return SparseRows(
        torch.from_numpy(np.cumsum(lengths)),
        torch.from_numpy(np.concatenate([p.indices for p in parts]).astype(np.int64)),
        torch.from_numpy(np.concatenate([p.data for p in parts])) / k2,
    )
