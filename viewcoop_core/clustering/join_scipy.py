"""The pruned min-sum join on the CPU with SciPy's compiled sparse kernels.

Same pairs and bit-for-bit the same sums as ``join.join_by_triples`` (see ``join`` for
the heavy/light bound); only the kernels differ:

1. candidates: S_HH(i, j) <= BC_HH(i, j) = sum over shared heavy l of sqrt(a_l b_l)
   (min(a, b) <= sqrt(ab)), which is one sparse product sqrt(H) sqrt(H)^T (SciPy SpGEMM).
   Pairs with BC_HH + lambda_i + lambda_j >= s_min are kept.
2. verification: the rows of every candidate pair, ``minimum``-ed elementwise (a
   compiled sorted merge), summed per pair in ascending column order in float32.

SciPy's sparse kernels release the GIL, so row chunks run in ``threads`` threads.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.clustering.sparse import SparseRows
from viewcoop_core.clustering.threads import chunks, thread_map


def to_scipy(m: SparseRows, values: Tensor | None = None) -> sp.csr_matrix:
    """The N x N scipy CSR of m (its values, or ``values`` in their place); shares memory."""
    n = m.num_rows
    data = (m.val if values is None else values).numpy()
    return sp.csr_matrix((data, m.col.numpy(), m.crow.numpy()), shape=(n, n))


def candidate_pairs(
    heavy: SparseRows,
    light_mass: Tensor,
    s_min: float,
    margin: float,
    chunk_rows: int,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j whose bound BC_HH + lambda_i + lambda_j reaches s_min - margin.

    Returns (i, j), int64 arrays, sorted by i (j in no particular order within i).
    """
    n = heavy.num_rows
    root = to_scipy(heavy, heavy.val.sqrt())
    lam = light_mass.numpy()

    def chunk(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        start, stop = bounds
        # Columns >= start only: pairs with j < i are found from row j's side.
        product = (root[start:stop] @ root[start:].T).tocsr()
        i = np.repeat(np.arange(start, stop), np.diff(product.indptr))
        j = product.indices.astype(np.int64) + start
        keep = (j > i) & (product.data + lam[i] + lam[j] >= s_min - margin)
        return i[keep], j[keep]

    parts = thread_map(chunk, chunks(n, chunk_rows), threads)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def exact_shared_mass(
    m: SparseRows, i: np.ndarray, j: np.ndarray, threads: int, chunk_pairs: int
) -> Tensor:
    """(P,) float32 S(i, j) = sum_l min(m[i, l], m[j, l]), summed in ascending column
    order (float32, sequentially: the order of the full join)."""
    matrix = to_scipy(m)
    matrix.sort_indices()

    def chunk(bounds: tuple[int, int]) -> Tensor:
        start, stop = bounds
        shared = matrix[i[start:stop]].minimum(matrix[j[start:stop]]).tocsr()
        shared.sort_indices()
        pair = np.repeat(np.arange(stop - start), np.diff(shared.indptr))
        sums = torch.zeros(stop - start, dtype=torch.float32)
        # index_add_ on the CPU adds in index order: a sequential float32 sum per pair.
        sums.index_add_(0, torch.from_numpy(pair), torch.from_numpy(shared.data))
        return sums

    parts = thread_map(chunk, chunks(len(i), chunk_pairs), threads)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32)
