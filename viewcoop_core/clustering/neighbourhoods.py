"""Expanded k-reciprocal neighbourhoods E(i), the support of the Jaccard encoding V.

- R(i, k) = {j in ranks[i, :k+1] : i in ranks[j, :k+1]} (k-reciprocal set, i included).
- E(i) = R(i, k1) united with every R(c, k_half), c in R(i, k1), that shares more than
  2/3 of its members with R(i, k1).

Two kernels give the same sets: ``expanded_sets_torch`` (any device, row blocks) and
``expanded_sets_scipy`` (CPU: the same set algebra as compiled sparse products).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def reciprocal_mask(ranks: Tensor, k: int) -> Tensor:
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


def expanded_sets_torch(
    ranks: Tensor, k1: int, k_half: int, block_size: int
) -> tuple[Tensor, Tensor]:
    """E(i) of every row, as sorted COO entries, with torch ops on ranks' device.

    Args:
        ranks: (N, K) int64, K >= k1+1 >= k_half+1.
        k1, k_half: sizes of R(i, k1) and of the candidate sets R(c, k_half).
        block_size: rows per block (scratch ~ rows x (k1+1) x (k_half+2) int64).

    Returns:
        (rows, cols), both (nnz,) int64, sorted by row then column, no duplicates.
    """
    n = ranks.shape[0]
    sentinel = n  # larger than every index: sorts last, never a member
    is_reciprocal = reciprocal_mask(ranks, k1)
    is_half_reciprocal = reciprocal_mask(ranks, k_half)
    half_set_size = is_half_reciprocal.sum(1)
    half_lists = ranks[:, : k_half + 1].contiguous()
    all_rows, all_cols = [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        own = ranks[start:stop, : k1 + 1]
        own_valid = is_reciprocal[start:stop]
        own_set = torch.where(own_valid, own, sentinel)
        own_sorted = own_set.sort(dim=1).values
        # Candidate c = own[:, p]; its half set R(c, k_half) as (rows, k1+1, k_half+1).
        flat_own = own.flatten()
        members = half_lists.index_select(0, flat_own).view(*own.shape, k_half + 1)
        member_valid = is_half_reciprocal.index_select(0, flat_own).view_as(members)
        flat_members = members.flatten(1)
        found_at = torch.searchsorted(own_sorted, flat_members).clamp_(max=k1)
        in_own_set = (own_sorted.gather(1, found_at) == flat_members).view_as(members)
        overlap = (in_own_set & member_valid).sum(2)
        # |R(c) & R(i)| > 2/3 |R(c)|, in integers.
        accepted = own_valid & (
            3 * overlap > 2 * half_set_size.index_select(0, flat_own).view_as(own)
        )
        added = torch.where(member_valid & accepted.unsqueeze(2), members, sentinel)
        pool = torch.cat([own_set, added.flatten(1)], dim=1).sort(dim=1).values
        keep = pool < sentinel
        keep[:, 1:] &= pool[:, 1:] != pool[:, :-1]
        row_ids = torch.arange(start, stop, device=ranks.device).unsqueeze(1).expand_as(pool)
        all_rows.append(row_ids[keep])
        all_cols.append(pool[keep])
    return torch.cat(all_rows), torch.cat(all_cols)


def _reciprocal_sets_scipy(ranks: np.ndarray, k: int) -> sp.csr_matrix:
    """R(i, k) as an N x N binary CSR: the k+1-NN lists that are mutual (K o K^T)."""
    n = ranks.shape[0]
    lists = sp.csr_matrix(
        (
            np.ones(n * (k + 1), dtype=np.float32),
            ranks[:, : k + 1].ravel(),
            np.arange(0, n * (k + 1) + 1, k + 1),
        ),
        shape=(n, n),
    )
    return lists.multiply(lists.T).tocsr()


def expanded_sets_scipy(ranks: Tensor, k1: int, k_half: int) -> tuple[Tensor, Tensor]:
    """``expanded_sets_torch`` on the CPU as sparse set algebra (compiled kernels).

    With R = R(., k1) and H = R(., k_half) as binary matrices: overlaps are R H^T
    (restricted to c in R(i)), the accepted candidates A, and E = pattern(R + A H).
    """
    n = ranks.shape[0]
    ranks_np = ranks.cpu().numpy()
    own = _reciprocal_sets_scipy(ranks_np, k1)
    half = _reciprocal_sets_scipy(ranks_np, k_half)
    half_size = np.diff(half.indptr)
    overlap = (own @ half.T).multiply(own).tocsr()  # |R(i) & H(c)| for c in R(i)
    overlap.eliminate_zeros()
    rows = np.repeat(np.arange(n), np.diff(overlap.indptr))
    accepted = 3 * overlap.data > 2 * half_size[overlap.indices]
    chosen = sp.csr_matrix(
        (
            np.ones(int(accepted.sum()), dtype=np.float32),
            (rows[accepted], overlap.indices[accepted]),
        ),
        shape=(n, n),
    )
    expanded = (own + chosen @ half).tocsr()
    expanded.sum_duplicates()
    expanded.sort_indices()
    row_ids = np.repeat(np.arange(n, dtype=np.int64), np.diff(expanded.indptr))
    return torch.from_numpy(row_ids), torch.from_numpy(expanded.indices.astype(np.int64))
