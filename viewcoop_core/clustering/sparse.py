"""Sparse row storage for the Jaccard distance: CSR rows, segment enumeration, and a
reused scratch that sums values per cell of a block of rows.

Every intermediate of the Jaccard computation is a set of O(N * k) entries held in
these structures; nothing N x N is ever allocated (scratch is bounded per block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Row blocks hold a dense (rows x N) float32 scratch accumulator: cap it at 2^26 elements
# (256 MiB) whatever block_size asks for, so large N shrinks the block instead of the RAM.
MAX_BLOCK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class SparseRows:
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


def row_pointers(rows: Tensor, num_rows: int) -> Tensor:
    """(num_rows+1,) int64 CSR pointers for (nnz,) int64 row ids sorted ascending."""
    counts = torch.bincount(rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def segment_positions(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the index ranges [starts[s], starts[s] + lengths[s]) of S segments.

    Returns (segment, position), both (sum(lengths),) int64: for every enumerated element
    the segment it belongs to and its index into the underlying storage.
    """
    total = int(lengths.sum())
    segment = torch.repeat_interleave(
        torch.arange(starts.numel(), device=starts.device), lengths, output_size=total
    )
    # position = k - (first k of the segment) + start: one gather of a per-segment shift.
    shift = starts - (lengths.cumsum(0) - lengths)
    position = torch.arange(total, device=starts.device).add_(shift.index_select(0, segment))
    return segment, position


class CellScratch:
    """Per-cell sums over the cells of a row block, in reused dense scratch, in O(entries).

    Cells are flat indices < ``max_cells`` (row-major ``row * width + col`` of a block).
    One float32 buffer holds the running sums and one int32 buffer the last entry that
    wrote each cell (to pick one entry per distinct cell); nothing scans the whole block,
    so a block costs what its entries cost, however wide the rows.
    """

    def __init__(self, max_cells: int, device: torch.device) -> None:
        self._sums = torch.zeros(max_cells, dtype=torch.float32, device=device)
        self._owner = torch.empty(max_cells, dtype=torch.int32, device=device)

    def totals(self, cells: Tensor, values: Tensor) -> Tensor:
        """Add (E,) float32 values at (E,) int64 cells; return each entry's cell total.

        On the CPU values are added in entry order (a sequential float32 sum per cell).
        The scratch is cleared again before returning.
        """
        self._sums.index_add_(0, cells, values)
        total = self._sums.index_select(0, cells)
        self._sums.index_fill_(0, cells, 0.0)
        return total

    def one_per_cell(self, cells: Tensor) -> Tensor:
        """Positions in ``cells`` of one entry per distinct cell, ordered by cell."""
        entry = torch.arange(cells.numel(), dtype=torch.int32, device=cells.device)
        self._owner.index_copy_(0, cells, entry)
        kept = (self._owner.index_select(0, cells) == entry).nonzero().squeeze(1)
        return kept.index_select(0, cells.index_select(0, kept).argsort())


def rows_per_block(block_size: int, width: int) -> int:
    """Rows per block so that a dense (rows x width) float32 scratch stays under the cap."""
    return max(1, min(block_size, MAX_BLOCK_ELEMENTS // max(width, 1)))


def row_blocks(work_per_row: np.ndarray, max_rows: int, max_work: int) -> list[tuple[int, int]]:
    """[start, stop) blocks of at most max_rows rows and about max_work units of work.

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
