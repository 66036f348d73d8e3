"""Array inputs of the public core functions, checked and converted in one place.

They take NumPy arrays, torch tensors (CPU or CUDA), CuPy arrays and (nested) lists of
numbers; anything else is a ``TypeError`` that says what is accepted, rather than an
``AttributeError`` from deep inside (a NumPy 2 array has a string ``.device``, a list
no ``.ndim``). Features with NaN or Inf are a ``ValueError`` that counts the bad rows:
downstream they would silently turn every sample into an outlier or every distance
into NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

ACCEPTED = "a NumPy array, a torch tensor, a CuPy array or a (nested) list of numbers"


def is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def as_tensor(x: Any, name: str) -> Tensor:
    """``x`` as a tensor: tensors as they are, CuPy arrays on their GPU (zero-copy),
    NumPy arrays and lists through NumPy (zero-copy for contiguous CPU arrays)."""
    if isinstance(x, Tensor):
        return x
    if is_cupy(x):
        return torch.as_tensor(x, device=f"cuda:{x.device.id}")
    return torch.from_numpy(np.ascontiguousarray(_host_array(x, name)))


def as_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array (tensors and CuPy arrays copied to the host)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if is_cupy(x):
        return x.get()
    return _host_array(x, name)


def _host_array(x: Any, name: str) -> np.ndarray:
    """A NumPy array or a list of numbers as a numeric NumPy array; TypeError otherwise."""
    if not isinstance(x, (np.ndarray, np.generic, list, tuple)):
        raise TypeError(f"{name} must be {ACCEPTED}, got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except ValueError as exc:  # ragged lists
        raise TypeError(f"{name} must be {ACCEPTED} of a regular shape: {exc}") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must be {ACCEPTED}, got an array of dtype {array.dtype}")
    return array


def check_finite_rows(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` when rows of the floating [N, D] ``x`` hold NaN or Inf,
    saying how many and which come first."""
    if not x.is_floating_point() or x.numel() == 0:
        return
    bad = ~torch.isfinite(x).all(dim=1)
    count = int(bad.sum())
    if count:
        first = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(
            f"{name} has {count} of {x.shape[0]} rows with NaN or Inf values (rows "
            f"{first}{' ...' if count > len(first) else ''}); every feature must be finite, "
            "a diverged model or a broken image upstream is the usual cause"
        )


def feature_matrix(x: Any, name: str = "features") -> Tensor:
    """``x`` as a finite floating [N, D] tensor (integers promoted to float32)."""
    features = as_tensor(x, name)
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        features = features.float()
    check_finite_rows(features, name)
    return features
