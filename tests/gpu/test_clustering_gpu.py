"""CUDA paths of the clustering module against the CPU path and scikit-learn.

Skipped without CUDA (tests/conftest.py); the cuML test also needs cuml to import.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from viewcoop_core.clustering import dbscan, jaccard, jaccard_distance, knn, pseudo_labels
from viewcoop_core.config import ClusterConfig

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")


def identity_features(
    n: int, dim: int, ids_per_cluster: int = 20, noise: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """(n, dim) float32 unit features: random identity directions plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // ids_per_cluster), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    identity = rng.integers(0, len(centres), size=n)
    points = centres[identity] + noise / np.sqrt(dim) * rng.standard_normal((n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(points.astype(np.float32))


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return identity_features(3000, 128)


@pytest.fixture(scope="module")
def cpu_distances(features) -> sp.csr_matrix:
    return jaccard_distance(features, k1=30, k2=6, device="cpu")


def test_cuda_neighbour_ranks_match_cpu_up_to_ties(features):
    x = torch.nn.functional.normalize(features, dim=1)
    on_cpu = knn.nearest_neighbour_ranks(x, 31)
    on_cuda = knn.nearest_neighbour_ranks(x.to(CUDA), 31).cpu()
    assert torch.equal(on_cuda[:, 0], torch.arange(len(x)))
    # Rank lists may swap near-tied neighbours only: their similarities must agree.
    x64 = x.double()
    similarity_cpu = (x64.unsqueeze(1) * x64[on_cpu]).sum(-1)
    similarity_cuda = (x64.unsqueeze(1) * x64[on_cuda]).sum(-1)
    torch.testing.assert_close(similarity_cuda, similarity_cpu, rtol=0, atol=1e-5)
    assert (on_cuda == on_cpu).float().mean() > 0.99


def test_cuda_jaccard_equals_cpu_from_the_same_ranks(features):
    # Same neighbour lists on both devices, so only floating-point order may differ.
    x = torch.nn.functional.normalize(features, dim=1)
    ranks = knn.nearest_neighbour_ranks(x, 31)

    def run(device: torch.device) -> sp.csr_matrix:
        clock = jaccard._StageClock(device, {})
        return jaccard._jaccard_from_ranks(x.to(device), ranks.to(device), 30, 6, 1.0, 1024, clock)

    on_cpu, on_cuda = run(torch.device("cpu")), run(CUDA)
    np.testing.assert_array_equal(on_cuda.indptr, on_cpu.indptr)
    np.testing.assert_array_equal(on_cuda.indices, on_cpu.indices)
    np.testing.assert_allclose(on_cuda.data, on_cpu.data, rtol=0, atol=1e-5)
    assert (on_cuda != on_cuda.T).nnz == 0


def test_cuda_jaccard_end_to_end_close_to_cpu(features, cpu_distances):
    on_cuda = jaccard_distance(features.to(CUDA), k1=30, k2=6)
    difference = abs(on_cuda - cpu_distances)
    # Near-tied neighbours may swap between devices; nearly all pairs must still agree.
    assert (difference.data > 1e-5).sum() <= 1e-3 * cpu_distances.nnz
    assert abs(on_cuda.nnz - cpu_distances.nnz) <= 1e-3 * cpu_distances.nnz


def test_torch_dbscan_on_cuda_equals_sklearn_label_for_label(cpu_distances):
    for eps, min_samples in [(0.6, 4), (0.5, 3), (0.7, 8)]:
        expected = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(cpu_distances)
        got = dbscan(cpu_distances, eps=eps, min_samples=min_samples, backend="torch")
        np.testing.assert_array_equal(got, expected.labels_)


def test_pseudo_labels_on_cuda_partition_like_cpu(features):
    on_cpu = pseudo_labels(features, ClusterConfig(backend="sklearn"))
    on_cuda = pseudo_labels(features.to(CUDA), ClusterConfig(backend="torch"))
    assert on_cpu.max() >= 10
    assert adjusted_rand_score(on_cpu, on_cuda) == 1.0


def test_cuda_jaccard_peak_memory_is_far_below_dense():
    n = 40_000
    features = identity_features(n, 256, seed=1).to(CUDA)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    distances = jaccard_distance(features, k1=30, k2=6, max_distance=0.6)
    peak = torch.cuda.max_memory_allocated() - baseline
    dense_bytes = n * n * 4
    assert peak < dense_bytes / 4, f"peak {peak / 2**30:.2f} GiB"
    assert distances.shape == (n, n) and np.all(distances.diagonal() == 0)


def test_auto_picks_torch_on_cuda_without_cuml(cpu_distances, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cuml", None)
    with caplog.at_level(logging.INFO, logger="viewcoop_core.clustering"):
        dbscan(cpu_distances, backend="auto")
    assert "auto -> torch" in caplog.text


def test_cuml_matches_sklearn(cpu_distances):
    pytest.importorskip("cuml")
    for eps, min_samples in [(0.6, 4), (0.5, 3)]:
        expected = dbscan(cpu_distances, eps=eps, min_samples=min_samples, backend="sklearn")
        got = dbscan(cpu_distances, eps=eps, min_samples=min_samples, backend="cuml")
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got == -1, expected == -1)
        assert adjusted_rand_score(expected, got) == 1.0
