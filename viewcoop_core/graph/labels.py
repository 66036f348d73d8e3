"""Label arrays in any of numpy, torch (CPU/CUDA) or CuPy: checks and conversions.

Cluster labels are 1-D integer vectors with ``OUTLIER`` (-1) for DBSCAN's "no cluster".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from viewcoop_core.arrays import as_numpy, is_cupy

OUTLIER = -1


def check_labels(y: Any, name: str, n: int | None = None) -> None:
    """Raise unless ``y`` is a 1-D label vector (of length ``n`` if given) with values >= -1."""
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{name} has {y.shape[0]} labels but y_img has {n}; both label all N samples"
        )
    if y.shape[0] == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < OUTLIER:
        raise ValueError(f"{name} has label {lo}; labels are cluster ids >= 0, or -1 for outliers")
    if hi > np.iinfo(np.int32).max:
        raise ValueError(f"{name} has label {hi}; cluster ids must fit in int32")


def validate_pair(y_img: Any, y_txt: Any) -> None:
    check_labels(y_img, "y_img")
    check_labels(y_txt, "y_txt", n=y_img.shape[0])


def index_tensor(index: Any, device: torch.device) -> torch.Tensor:
    """[K] int64 index tensor on ``device`` from ints, a range, a list, numpy or torch."""
    if not isinstance(index, torch.Tensor):
        index = torch.as_tensor(np.asarray(index))
    return index.to(device=device, dtype=torch.long).reshape(-1)


def numpy_labels(y: Any, name: str) -> np.ndarray:
    y = as_numpy(y, name)  # a TypeError for what is no array
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer cluster labels, got dtype {y.dtype}")
    return y


def torch_labels(y: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if is_cupy(y):
        y = torch.from_dlpack(y)
    elif not isinstance(y, torch.Tensor):
        y = torch.from_numpy(numpy_labels(y, name))
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer cluster labels, got dtype {y.dtype}")
    return y if device is None else y.to(device)


def label_device(*ys: Any) -> torch.device:
    """Device of the first torch tensor among ``ys`` (labels follow it), else CPU."""
    for y in ys:
        if isinstance(y, torch.Tensor):
            return y.device
    return torch.device("cpu")


def column_keys(y: Any) -> Any:
    """Labels with outliers re-coded to -2, for the column side of a comparison.

    The row side keeps -1, so ``row_label == column_key`` is exactly Eq. 3's "same
    non-outlier cluster" in one comparison: a row outlier (-1) meets ids >= 0 or -2,
    a column outlier (-2) meets ids >= 0 or -1, and neither ever matches.
    Works on numpy, torch and cupy arrays alike; the dtype is kept.
    """
    if isinstance(y, torch.Tensor):
        return torch.where(y == OUTLIER, OUTLIER - 1, y)
    return y - (y == OUTLIER).astype(y.dtype)


def rows_per_tile(n: int, tile_bytes: int) -> int:
    return max(1, tile_bytes // max(n, 1))
