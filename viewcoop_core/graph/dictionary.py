"""The modal mutual dictionary Dic (Eq. 3), dense on any backend or as rows for training.

Eq. 3, with the outlier rule made explicit::

    Dic[a, b] = [y_img[a] == y_img[b] and y_img[a] != -1]
              + [y_txt[a] == y_txt[b] and y_txt[a] != -1]          in {0, 1, 2}, int8

An outlier is never "in the same cluster" as anything, not even another outlier
(DBSCAN's -1 is "no cluster", not a cluster). The diagonal follows the same rule, so
``Dic[a, a]`` is the number of modalities in which ``a`` is not an outlier.

The dense N x N dictionary is only built on the clustering actor (statistics, a
cross-check); training asks for ``batch_dictionary`` rows computed from the labels, so
nothing N x N leaves the actor. Backends: ``numpy`` and ``torch`` (cache-sized row
tiles), ``cupy`` (one fused elementwise kernel per tile), ``auto`` (logged choice).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import torch

from viewcoop_core.graph.labels import (
    column_keys,
    index_tensor,
    is_cupy,
    label_device,
    numpy_labels,
    rows_per_tile,
    torch_labels,
    validate_pair,
)
from viewcoop_core.vocabulary import DICTIONARY_BACKEND_CHOICES

logger = logging.getLogger(__name__)

BACKENDS = DICTIONARY_BACKEND_CHOICES

# numpy/torch on the CPU: row tiles whose scratch stays in the last-level cache, so
# the second pass over a tile does not go back to DRAM. Measured with numpy on a
# 2-core EPYC at N=37,778: 4 MiB tiles ~0.3 s, 1 GiB tiles ~2.7 s.
_CPU_TILE_BYTES = 4 << 20
# cupy: each launch covers fewer than 2**31 elements, so its flat index fits int32.
_GPU_MAX_ELEMENTS_PER_LAUNCH = (1 << 31) - 1


def _cupy_or_raise() -> Any:
    """Import CuPy and check that a CUDA device is visible; raise an actionable error if not."""
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(
            "backend='cupy' needs CuPy: pip install 'viewcoop[gpu-cu12]' (or gpu-cu13), "
            "or use backend='numpy' / 'torch'"
        ) from err
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError when there is no driver at all
        raise RuntimeError(f"backend='cupy' found no usable CUDA device ({err})") from err
    if n_devices == 0:
        raise RuntimeError("backend='cupy' found no CUDA device; use backend='numpy' or 'torch'")
    return cupy


def _cupy_usable() -> bool:
    try:
        _cupy_or_raise()
    except RuntimeError:
        return False
    return True


def _resolve_backend(backend: str, y_img: Any, y_txt: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown mutual-dictionary backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if _cupy_usable():
        chosen, why = "cupy", "CuPy is importable and a CUDA device is present"
    elif any(isinstance(y, torch.Tensor) and y.is_cuda for y in (y_img, y_txt)):
        # Labels already on a GPU without CuPy: stay there instead of copying to host.
        chosen, why = "torch", "no CuPy, labels are CUDA tensors"
    else:
        chosen, why = "numpy", "no CuPy with a CUDA device"
    logger.info("mutual_dictionary backend=auto -> %s (%s)", chosen, why)
    return chosen


def _dictionary_numpy(y_img: np.ndarray, y_txt: np.ndarray, tile_bytes: int) -> np.ndarray:
    n = y_img.shape[0]
    yi, yt = y_img.astype(np.int32), y_txt.astype(np.int32)
    ki, kt = column_keys(yi), column_keys(yt)
    dic = np.empty((n, n), dtype=np.int8)
    rows = rows_per_tile(n, tile_bytes)
    scratch = np.empty((min(rows, n), n), dtype=np.bool_)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tile, same_txt = dic[r0:r1], scratch[: r1 - r0]
        # bool and int8 share a byte layout (0/1): the image comparison is written
        # straight into the output and the text one is added as int8 (a same-dtype
        # add is ~1.5x faster than a mixed bool/int8 one), so one scratch tile is the
        # only temporary.
        np.equal(yi[r0:r1, None], ki[None, :], out=tile.view(np.bool_))
        np.equal(yt[r0:r1, None], kt[None, :], out=same_txt)
        np.add(tile, same_txt.view(np.int8), out=tile)
    return dic


def _dictionary_torch(y_img: torch.Tensor, y_txt: torch.Tensor, tile_bytes: int) -> torch.Tensor:
    n = y_img.shape[0]
    yi, yt = y_img.to(torch.int32), y_txt.to(torch.int32)
    ki, kt = column_keys(yi), column_keys(yt)
    dic = torch.empty((n, n), dtype=torch.int8, device=yi.device)
    rows = rows_per_tile(n, tile_bytes)
    scratch = torch.empty((min(rows, n), n), dtype=torch.bool, device=yi.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tile, same_txt = dic[r0:r1], scratch[: r1 - r0]
        torch.eq(yi[r0:r1, None], ki[None, :], out=tile.view(torch.bool))
        torch.eq(yt[r0:r1, None], kt[None, :], out=same_txt)
        tile.add_(same_txt.view(torch.int8))  # as in numpy; ~2x faster than bool
    return dic


@functools.lru_cache(maxsize=1)
def _cupy_dictionary_kernel() -> Any:
    """One elementwise kernel: both comparisons, the outlier rule and the sum, int8 out.

    Called with [R, 1] row labels and [1, N] column labels, CuPy broadcasts them to
    the [R, N] output tile, so each thread reads four int32 and writes one byte.
    """
    cupy = _cupy_or_raise()
    return cupy.ElementwiseKernel(
        "int32 img_row, int32 txt_row, int32 img_col, int32 txt_col",
        "int8 dic",
        "dic = (signed char)((img_row == img_col && img_row >= 0)"
        " + (txt_row == txt_col && txt_row >= 0));",
        "viewcoop_mutual_dictionary",
    )


def _to_cupy_labels(y: Any, name: str) -> Any:
    cupy = _cupy_or_raise()
    if is_cupy(y):
        return y
    if isinstance(y, torch.Tensor) and y.is_cuda:
        return cupy.from_dlpack(y.detach())
    return cupy.asarray(numpy_labels(y, name))


def _dictionary_cupy(y_img: Any, y_txt: Any, tile_bytes: int) -> Any:
    cupy = _cupy_or_raise()
    kernel = _cupy_dictionary_kernel()
    n = y_img.shape[0]
    yi, yt = y_img.astype(cupy.int32, copy=False), y_txt.astype(cupy.int32, copy=False)
    dic = cupy.empty((n, n), dtype=cupy.int8)
    # The kernel writes straight into the output (no scratch); tiles only bound the
    # elements per launch.
    rows = rows_per_tile(n, min(tile_bytes, _GPU_MAX_ELEMENTS_PER_LAUNCH))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        kernel(yi[r0:r1, None], yt[r0:r1, None], yi[None, :], yt[None, :], dic[r0:r1])
    return dic


def mutual_dictionary(
    y_img: Any, y_txt: Any, backend: str = "auto", max_tile_bytes: int = 1 << 30
) -> Any:
    """The dense modal mutual dictionary Dic of Eq. 3.

    Args:
        y_img, y_txt: [N] integer cluster labels (-1 = outlier) as numpy arrays, torch
            tensors (CPU or CUDA) or cupy arrays.
        backend: "numpy" (CPU, row tiles), "torch" (row tiles on the labels' device:
            CUDA tensors stay on the GPU), "cupy" (one fused elementwise kernel per
            row tile) or "auto" (cupy when importable with a CUDA device, else torch
            for CUDA tensor labels, else numpy; the choice is logged). An explicit
            backend that is unavailable raises RuntimeError, never falls back.
        max_tile_bytes: upper bound on the scratch memory of one row tile (numpy /
            torch: a bool tile of rows x N; cupy writes straight into the output, so
            it bounds the elements per kernel launch). numpy and torch use smaller,
            cache-sized tiles when this bound allows.

    Returns:
        [N, N] int8 Dic in {0, 1, 2}: a numpy array, torch tensor or cupy array
        according to the backend. The diagonal holds the number of modalities in
        which the sample is not an outlier.
    """
    if max_tile_bytes < 1:
        raise ValueError(f"max_tile_bytes must be >= 1, got {max_tile_bytes}")
    backend = _resolve_backend(backend, y_img, y_txt)
    if backend == "numpy":
        yi, yt = numpy_labels(y_img, "y_img"), numpy_labels(y_txt, "y_txt")
        validate_pair(yi, yt)
        return _dictionary_numpy(yi, yt, min(max_tile_bytes, _CPU_TILE_BYTES))
    if backend == "torch":
        device = label_device(y_img, y_txt)
        yi, yt = torch_labels(y_img, "y_img", device), torch_labels(y_txt, "y_txt", device)
        validate_pair(yi, yt)
        tile = max_tile_bytes if yi.is_cuda else min(max_tile_bytes, _CPU_TILE_BYTES)
        return _dictionary_torch(yi, yt, tile)
    yi, yt = _to_cupy_labels(y_img, "y_img"), _to_cupy_labels(y_txt, "y_txt")
    if yi.dtype.kind not in "iu" or yt.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtypes {yi.dtype} and {yt.dtype}")
    validate_pair(yi, yt)
    return _dictionary_cupy(yi, yt, max_tile_bytes)


# ------------------------------------------------------------- rows for training


def dictionary_rows(y_img: Any, y_txt: Any, rows: Any, cols: Any = None) -> torch.Tensor:
    """Rows of Dic computed from the labels alone, on the labels' device.

    Args:
        y_img, y_txt: [N] integer labels (numpy, torch or cupy; -1 = outlier).
        rows: [B] sample indices (ints, list, numpy or torch).
        cols: optional [M] sample indices; all N columns when None.

    Returns:
        [B, M] int8 tensor, ``Dic[rows][:, cols]``; M = N when ``cols`` is None.
    """
    device = label_device(y_img, y_txt)
    yi, yt = torch_labels(y_img, "y_img", device), torch_labels(y_txt, "y_txt", device)
    validate_pair(yi, yt)
    yi, yt = yi.to(torch.int32), yt.to(torch.int32)  # unsigned dtypes cannot hold -2 keys
    row_idx = index_tensor(rows, device)
    yi_r, yt_r = yi[row_idx], yt[row_idx]
    if cols is not None:
        col_idx = index_tensor(cols, device)
        yi, yt = yi[col_idx], yt[col_idx]
    same_img = yi_r[:, None] == column_keys(yi)[None, :]
    same_txt = yt_r[:, None] == column_keys(yt)[None, :]
    return same_img.to(torch.int8) + same_txt.to(torch.int8)


def batch_dictionary(y_img_b: Any, y_txt_b: Any) -> torch.Tensor:
    """In-batch Dic (Eq. 3): [B] labels of the batch samples -> [B, B] int8 on their device."""
    n = len(y_img_b)
    return dictionary_rows(y_img_b, y_txt_b, torch.arange(n))


# ----------------------------------------------------------------------- graph
