"""The min-sum join of the Jaccard distance, pruned exactly by a heavy/light split.

For rows a = V_qe[i], b = V_qe[j] (non-negative, each summing to 1) the Jaccard distance
needs S(i, j) = sum_l min(a_l, b_l), and only pairs with D = 1 - S / (2 - S) below
``max_distance`` are kept, i.e. S > s_min = 2 (1 - max_distance) / (2 - max_distance).
Enumerating every (i, j, l) with a shared column l is ~N x 4,000 triples at k1 = 30,
and almost all of them belong to pairs far above the distance cut.

The pruning (exact: no pair with S > s_min is lost): every row is split into its *light*
entries (its smallest values, total mass lambda_i <= about s_min / 2) and its *heavy*
rest. A shared column with a light side contributes at most that side's value, so

    S(i, j) <= S_HH(i, j) + lambda_i + lambda_j,

S_HH being the min-sum over columns heavy in both rows. Pairs sharing no heavy column
have S <= lambda_i + lambda_j < s_min and are never enumerated; the others are kept
as candidates when their bound reaches s_min, and only candidates get the full min-sum.
At eps = 0.6 about a third of the entries are heavy: ~7x fewer triples than the full
join, and ~1.3 candidates per kept pair (N = 10,000).

Every full min-sum adds the shared mins in ascending column order in float32, one after
the other, as the unpruned join does, so stored distances are bit-for-bit the same.

Two kernels keep the same pairs with the same sums: ``join_by_triples`` (torch, any
device: enumerates the heavy (i, j, l) triples, summing per cell of a row block) and, on
the CPU, ``join_scipy`` (compiled sparse products on Python threads; its candidates come
from the looser bound sqrt(a b) >= min(a, b), one sparse matrix product).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from viewcoop_core.clustering import join_scipy
from viewcoop_core.clustering.sparse import (
    CellScratch,
    SparseRows,
    row_blocks,
    row_pointers,
    segment_positions,
)

# Bounds are compared with this margin so float32 rounding never drops a pair.
BOUND_MARGIN = 1e-4
# Light mass per row as a share of s_min / 2: the larger, the fewer heavy triples but the
# looser the bound (more candidates to verify). 0.8 balanced the two at eps = 0.6.
_LIGHT_SHARE = 0.8


def min_shared_mass(max_distance: float) -> float:
    """s_min: D < max_distance  <=>  S > s_min, for D = 1 - S / (2 - S)."""
    return 2.0 * (1.0 - max_distance) / (2.0 - max_distance)


def light_budget(max_distance: float) -> float:
    """The light mass a row may set aside so that two light parts stay below s_min."""
    return max(0.0, _LIGHT_SHARE * (min_shared_mass(max_distance) / 2.0 - BOUND_MARGIN))


def _sorted_keys(keys: Tensor) -> Tensor:
    """keys sorted ascending (NumPy's SIMD sort on the CPU: ~6x torch's there)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.sort(keys.numpy()))
    return torch.sort(keys).values


def split_heavy(m: SparseRows, budget: float) -> tuple[SparseRows, Tensor]:
    """Each row's heavy part: all entries from its smallest value h_i on such that the
    values below h_i sum to more than ``budget``; the entries below h_i are light.

    Returns:
        heavy: SparseRows of the heavy entries (columns ascending within rows);
        light_mass: (N,) float32, mass of each row's light entries (<= budget).
    """
    n = m.num_rows
    light_mass = torch.zeros(n, dtype=torch.float32, device=m.val.device)
    if budget <= 0 or m.val.numel() == 0:
        return m, light_mass
    rows = m.row_of_entry()
    # Positive float32 values order like their bit patterns: sort (row, value) as one int64.
    keys = _sorted_keys((rows << 32) | m.val.view(torch.int32).to(torch.int64))
    ascending = (keys & 0xFFFFFFFF).to(torch.int32).view(torch.float32)
    cumulative = ascending.double().cumsum(0)
    before_row = torch.cat([cumulative.new_zeros(1), cumulative]).index_select(0, m.crow[:-1])
    # Rows of sorted entries are rows again (the sort keeps rows together, in order).
    over_budget = (cumulative - before_row.index_select(0, rows)) > budget
    # h_i: the first value whose running mass passes the budget (every row has one:
    # it holds mass ~1 > budget). Ties with h_i are heavy, so light mass stays <= budget.
    first_heavy = torch.full((n,), float("inf"), dtype=torch.float32, device=m.val.device)
    first_heavy.scatter_reduce_(0, rows, torch.where(over_budget, ascending, float("inf")), "amin")
    heavy = m.val >= first_heavy.index_select(0, rows)
    light_mass.index_add_(0, rows, torch.where(heavy, 0.0, m.val))
    kept = heavy.nonzero().squeeze(1)
    heavy_part = SparseRows(
        row_pointers(rows.index_select(0, kept), n),
        m.col.index_select(0, kept),
        m.val.index_select(0, kept),
    )
    return heavy_part, light_mass


def _heavy_pairs(
    heavy: SparseRows, light_mass: Tensor, s_min: float, max_rows: int, max_triples: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs i < j sharing a heavy column whose bound S_HH + lambda_i + lambda_j reaches
    s_min, by enumerating (i, j, l) triples of heavy entries.

    Returns (i, j, s_hh): int64, int64, float32, sorted by i then j; s_hh is summed in
    ascending column order (the triples of a row come in its column order).
    """
    n = heavy.num_rows
    device = heavy.val.device
    entry_row = heavy.row_of_entry()
    order = torch.sort(heavy.col, stable=True).indices  # rows ascend within each column
    column_row = entry_row.index_select(0, order)
    column_val = heavy.val.index_select(0, order)
    column_start = row_pointers(heavy.col.index_select(0, order), n)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=device)
    # Rows j > i of the column of entry (i, l): the column's suffix after the entry itself.
    suffix_start = position + 1
    suffix_length = column_start.index_select(0, heavy.col + 1) - suffix_start
    work = torch.zeros(n, dtype=torch.int64, device=device)
    work.index_add_(0, entry_row, suffix_length)
    scratch = CellScratch(max_rows * n, device)
    threshold = s_min - BOUND_MARGIN
    out_cell, out_sum = [], []
    for start, stop in row_blocks(work.cpu().numpy(), max_rows, max_triples):
        first, last = int(heavy.crow[start]), int(heavy.crow[stop])
        entry, where = segment_positions(suffix_start[first:last], suffix_length[first:last])
        if entry.numel() == 0:
            continue
        i = entry_row[first:last].index_select(0, entry)
        j = column_row.index_select(0, where)
        shared = torch.minimum(
            heavy.val[first:last].index_select(0, entry), column_val.index_select(0, where)
        )
        # Cells of the block, row-major: (i - start) * N + j.
        cells = (i - start).mul_(n).add_(j)
        s_hh = scratch.totals(cells, shared)
        bound = s_hh + light_mass.index_select(0, i) + light_mass.index_select(0, j)
        passing = (bound >= threshold).nonzero().squeeze(1)
        cells, s_hh = cells.index_select(0, passing), s_hh.index_select(0, passing)
        kept = scratch.one_per_cell(cells)
        out_cell.append(cells.index_select(0, kept) + start * n)
        out_sum.append(s_hh.index_select(0, kept))
    if not out_cell:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty, empty.float()
    cell = torch.cat(out_cell)
    return cell // n, cell % n, torch.cat(out_sum)


def _exact_shared_mass(
    m: SparseRows, i: Tensor, j: Tensor, max_rows: int, max_triples: int
) -> Tensor:
    """(P,) float32 S(i, j) for pairs sorted by i: the rows i of a block are laid out
    densely and row j's entries gather from them in ascending column order."""
    n = m.num_rows
    device = m.val.device
    sums = torch.zeros(i.numel(), dtype=torch.float32, device=device)
    if i.numel() == 0:
        return sums
    length = m.crow.diff()
    pair_start = row_pointers(i, n).cpu().numpy()
    work = torch.zeros(n, dtype=torch.int64, device=device)
    work.index_add_(0, i, length.index_select(0, j))
    dense = torch.zeros(max_rows * n, dtype=torch.float32, device=device)
    entry_row = m.row_of_entry()
    for start, stop in row_blocks(work.cpu().numpy(), max_rows, max_triples):
        p0, p1 = int(pair_start[start]), int(pair_start[stop])
        if p0 == p1:
            continue
        e0, e1 = int(m.crow[start]), int(m.crow[stop])
        laid_out = (entry_row[e0:e1] - start).mul_(n).add_(m.col[e0:e1])
        dense.index_copy_(0, laid_out, m.val[e0:e1])
        jj = j[p0:p1]
        pair, where = segment_positions(m.crow.index_select(0, jj), length.index_select(0, jj))
        cell = (i[p0:p1] - start).index_select(0, pair).mul_(n).add_(m.col.index_select(0, where))
        shared = torch.minimum(dense.index_select(0, cell), m.val.index_select(0, where))
        # index_add_ adds in index order on the CPU: a sequential sum per pair.
        sums.index_add_(0, pair.add_(p0), shared)
        dense.index_fill_(0, laid_out, 0.0)
    return sums


def join_by_triples(
    m: SparseRows, max_distance: float, max_rows: int, max_triples: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate pairs and their exact S with torch ops on m's device.

    Returns (i, j, s): int64, int64, float32, i < j, sorted by i then j.
    """
    s_min = min_shared_mass(max_distance)
    heavy, light_mass = split_heavy(m, light_budget(max_distance))
    i, j, shared = _heavy_pairs(heavy, light_mass, s_min, max_rows, max_triples)
    # Where both rows are all heavy, the heavy min-sum is already the full one.
    partial = ((light_mass.index_select(0, i) + light_mass.index_select(0, j)) > 0).nonzero()
    partial = partial.squeeze(1)
    if partial.numel():
        exact = _exact_shared_mass(
            m, i.index_select(0, partial), j.index_select(0, partial), max_rows, max_triples
        )
        shared.index_copy_(0, partial, exact)
    return i, j, shared


def join_on_cpu(
    m: SparseRows, max_distance: float, max_rows: int, max_entries: int, threads: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``join_by_triples``' pairs and sums with SciPy's compiled kernels (CPU tensors):
    candidate rows in chunks of max_rows, verified pairs in chunks of about max_entries
    entries, chunks on ``threads`` threads."""
    s_min = min_shared_mass(max_distance)
    heavy, light_mass = split_heavy(m, light_budget(max_distance))
    i, j = join_scipy.candidate_pairs(heavy, light_mass, s_min, BOUND_MARGIN, max_rows, threads)
    pairs_per_chunk = max(1, max_entries // max(1, 2 * int(m.crow.diff().max())))
    shared = join_scipy.exact_shared_mass(m, i, j, threads, pairs_per_chunk)
    return torch.from_numpy(i), torch.from_numpy(j), shared


def jaccard_pairs(
    m: SparseRows,
    max_distance: float,
    max_rows: int,
    max_triples: int,
    kernel: str = "torch",
    threads: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Jaccard distances D(i, j) < max_distance for j > i, plus every (i, i) with D = 0.

    Args:
        m: V_qe, rows non-negative and summing to 1 (up to rounding).
        max_distance: in (0, 1]; 1 keeps every pair that shares a column.
        max_rows: rows per block (torch: of the (rows x N) scratch; scipy: per product).
        max_triples: about how many enumerated entries a block may hold.
        kernel: "torch" (m's device) or "scipy" (CPU, on ``threads`` threads). Without a
            distance cut (max_distance = 1) nothing prunes and the torch kernel runs.

    Returns:
        (rows, cols, distances): int64, int64, float32 tensors on m's device.
    """
    n = m.num_rows
    device = m.val.device
    if kernel == "scipy" and light_budget(max_distance) > 0:
        i, j, shared = join_on_cpu(m, max_distance, max_rows, max_triples, threads)
    else:
        i, j, shared = join_by_triples(m, max_distance, max_rows, max_triples)
    distance = (1.0 - shared / (2.0 - shared)).clamp_(min=0.0)
    keep = (distance < max_distance).nonzero().squeeze(1)
    own = torch.arange(n, device=device)
    return (
        torch.cat([own, i.index_select(0, keep)]),
        torch.cat([own, j.index_select(0, keep)]),
        torch.cat([torch.zeros(n, device=device), distance.index_select(0, keep)]),
    )
