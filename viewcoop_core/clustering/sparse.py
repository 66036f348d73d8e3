"""Sparse row storage for the Jaccard distance: CSR rows, segment enumeration, and a
reused dense scratch that sums values per cell of a block of rows.

Every intermediate of the Jaccard computation is a set of O(N * k) entries held in
these structures; nothing N x N is ever allocated (scratch is bounded per block).
"""

from __future__ import annotations

from dataclasses import dataclass

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


class BlockAccumulator:
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


def rows_per_block(block_size: int, width: int) -> int:
    """Rows per block so that a dense (rows x width) float32 scratch stays under the cap."""
    return max(1, min(block_size, MAX_BLOCK_ELEMENTS // max(width, 1)))
