"""Camera-aware feature normalisation before clustering (``cluster.camera_norm``).

A camera's light, background and optics shift every feature it sees the same way, so a
weak backbone's nearest neighbours are mostly same-camera and DBSCAN groups cameras
rather than vehicles. Removing each camera's mean feature (``mean``), or also dividing
by its per-dimension spread (``standardize``), before the k-reciprocal Jaccard distance
takes that shared shift out; the features are L2-normalised again afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from viewcoop_core.vocabulary import CAMERA_NORMS

_MIN_STD = 1e-6


def camera_normalized(features: Tensor, camids: np.ndarray | Tensor, mode: str) -> Tensor:
    """``features`` [N, D] with each camera's statistics removed, L2-normalised.

    camids: int [N] camera of each row. ``none`` returns the features unchanged.
    """
    if mode not in CAMERA_NORMS:
        raise ValueError(f"camera_norm={mode!r}: expected one of {CAMERA_NORMS}")
    if mode == "none":
        return features
    x = F.normalize(features.float(), dim=1)
    # A copy: arrays from the Ray object store are read-only, which torch warns about.
    cams = torch.as_tensor(np.array(camids, dtype=np.int64), device=x.device)
    if cams.shape != (x.shape[0],):
        raise ValueError(f"camids must be [N] = [{x.shape[0]}], got {tuple(cams.shape)}")
    _, index = torch.unique(cams, return_inverse=True)
    count = torch.bincount(index).to(x.dtype)[:, None]
    mean = torch.zeros(int(index.max()) + 1, x.shape[1], dtype=x.dtype, device=x.device)
    mean.index_add_(0, index, x)
    mean /= count
    centred = x - mean[index]
    if mode == "standardize":
        var = torch.zeros_like(mean).index_add_(0, index, centred**2) / count
        centred = centred / var.sqrt().clamp(min=_MIN_STD)[index]
    return F.normalize(centred, dim=1)
