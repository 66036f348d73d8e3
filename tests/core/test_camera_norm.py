"""Camera-aware normalisation before clustering, against a naive per-camera loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.clustering.camera import camera_normalized
from viewcoop_core.config import ClusterConfig


def naive(features: np.ndarray, camids: np.ndarray, standardize: bool) -> np.ndarray:
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    out = np.empty_like(x)
    for cam in np.unique(camids):
        rows = camids == cam
        centred = x[rows] - x[rows].mean(0)
        if standardize:
            centred = centred / np.maximum(x[rows].std(0), 1e-6)
        out[rows] = centred
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["mean", "standardize"])
def test_matches_a_per_camera_loop(mode):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 6))
    camids = rng.integers(0, 3, size=40)
    got = camera_normalized(torch.from_numpy(features), camids, mode).numpy()
    np.testing.assert_allclose(got, naive(features, camids, mode == "standardize"), atol=1e-6)


def test_none_is_the_identity_and_bad_modes_are_named():
    x = torch.randn(5, 3)
    assert camera_normalized(x, np.zeros(5), "none") is x
    with pytest.raises(ValueError, match="camera_norm='median'"):
        camera_normalized(x, np.zeros(5), "median")


def test_removing_camera_looks_lets_dbscan_find_identities():
    """Each camera adds a large shared offset: without normalisation DBSCAN groups
    cameras; with the camera means removed it finds the identities."""
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(12), 6)
    camids = np.tile(np.arange(6), 12)
    identity = rng.normal(size=(12, 32))
    look = 3.0 * rng.normal(size=(6, 32))
    features = torch.from_numpy(identity[ids] + look[camids] + 0.1 * rng.normal(size=(72, 32)))
    settings = ClusterConfig(eps=0.6, min_samples=3, k1=8, k2=3, backend="sklearn")
    plain = adjusted_rand_score(ids, pseudo_labels(features, settings))
    normed = camera_normalized(features, camids, "mean")
    aware = adjusted_rand_score(ids, pseudo_labels(normed, settings))
    assert aware > 0.9 > plain
