"""The Jaccard stages' two kernel sets (torch, any device; SciPy, CPU) against each other,
the pruned join against the unpruned one, and the device-side DBSCAN against sklearn.

The dense Cluster-Contrast reference is in test_clustering.py; here the kernels must agree
bit for bit, which is what makes the fast CPU path "the same partition" by construction.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

from viewcoop_core.clustering import (
    dbscan,
    dbscan_upper_pairs,
    jaccard,
    jaccard_distance,
    jaccard_upper_pairs,
    join,
    pseudo_labels,
)
from viewcoop_core.clustering.encoding import (
    gaussian_rows,
    query_expansion_scipy,
    query_expansion_torch,
)
from viewcoop_core.clustering.knn import nearest_neighbour_ranks
from viewcoop_core.clustering.neighbourhoods import expanded_sets_scipy, expanded_sets_torch
from viewcoop_core.clustering.sparse import SparseRows
from viewcoop_core.config import ClusterConfig

EPS_CUT = float(np.nextafter(np.float32(0.6), np.float32(1.0)))


def identity_features(n: int, dim: int, ids: int, noise: float, seed: int) -> torch.Tensor:
    """(n, dim) unit features around ``ids`` random identity directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, ids, n)] + noise / np.sqrt(dim) * rng.standard_normal((n, dim))
    return torch.nn.functional.normalize(torch.from_numpy(points.astype(np.float32)), dim=1)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return identity_features(600, 32, ids=60, noise=1.0, seed=3)


@pytest.fixture(scope="module")
def ranks(x) -> torch.Tensor:
    return nearest_neighbour_ranks(x, 31)


@pytest.fixture(scope="module")
def small_x() -> torch.Tensor:
    return identity_features(240, 16, ids=24, noise=1.0, seed=5)


@pytest.fixture(scope="module")
def small_ranks(small_x) -> torch.Tensor:
    return nearest_neighbour_ranks(small_x, 31)


def upper(x, ranks, max_distance, kernels, block_size=1024):
    clock = jaccard._StageClock(x.device, {})
    rows, cols, dist = jaccard._upper_pairs_from_ranks(
        x, ranks, 30, 6, max_distance, block_size, clock, kernels
    )
    order = np.lexsort((cols.numpy(), rows.numpy()))
    return rows.numpy()[order], cols.numpy()[order], dist.numpy()[order]


def assert_same_pairs(a, b):
    for got, expected in zip(a, b, strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("max_distance", [1.0, EPS_CUT, 0.8])
def test_torch_and_scipy_kernels_give_bit_identical_pairs(x, ranks, max_distance):
    on_torch = upper(x, ranks, max_distance, "torch")
    on_scipy = upper(x, ranks, max_distance, "scipy")
    assert_same_pairs(on_scipy, on_torch)
    rows, cols, dist = on_scipy
    assert np.all(rows <= cols) and np.all(dist[rows != cols] < max_distance)


def test_pruned_join_keeps_exactly_the_unpruned_pairs_below_the_cut(x, ranks):
    full_rows, full_cols, full_dist = upper(x, ranks, 1.0, "torch")
    below = (full_dist < 0.7) | (full_rows == full_cols)
    for kernels in ("torch", "scipy"):
        assert_same_pairs(
            upper(x, ranks, 0.7, kernels), (full_rows[below], full_cols[below], full_dist[below])
        )
    # The cut matters here: many pairs share columns but lie above it.
    assert below.mean() < 0.5


def test_small_blocks_and_chunks_do_not_change_the_pairs(small_x, small_ranks, monkeypatch):
    expected = upper(small_x, small_ranks, EPS_CUT, "torch")
    monkeypatch.setattr(jaccard, "_MAX_JOIN_TRIPLES", 2000)
    monkeypatch.setattr(jaccard, "_MAX_JOIN_SCRATCH", 240 * 7)
    monkeypatch.setattr(jaccard, "_MAX_GATHER_ELEMENTS", {"cpu": 100, "cuda": 100})
    for kernels in ("torch", "scipy"):
        assert_same_pairs(upper(small_x, small_ranks, EPS_CUT, kernels, block_size=20), expected)


def test_threads_do_not_change_the_pairs(x, ranks):
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = upper(x, ranks, EPS_CUT, "scipy")
        torch.set_num_threads(2)
        two = upper(x, ranks, EPS_CUT, "scipy")
        # The sparse stages run on Python threads and restore the torch setting.
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert_same_pairs(two, one)


def test_expanded_sets_and_query_expansion_agree_between_kernels(x, ranks):
    rows_t, cols_t = expanded_sets_torch(ranks, 30, 15, block_size=150)
    rows_s, cols_s = expanded_sets_scipy(ranks, 30, 15)
    assert torch.equal(rows_t, rows_s) and torch.equal(cols_t, cols_s)
    v = gaussian_rows(x, rows_s, cols_s, 1 << 12)
    on_torch = query_expansion_torch(v, ranks, 6, max_rows=70, max_entries=20_000)
    on_scipy = query_expansion_scipy(v, ranks, 6, chunk_rows=70, threads=2)
    for a, b in zip(
        (on_torch.crow, on_torch.col, on_torch.val), (on_scipy.crow, on_scipy.col, on_scipy.val)
    ):
        assert torch.equal(a, b)
    # Rows of V and V_qe are distributions.
    torch.testing.assert_close(
        torch.zeros(len(x)).index_add_(0, on_scipy.row_of_entry(), on_scipy.val),
        torch.ones(len(x)),
    )


def test_heavy_split_sets_aside_the_smallest_entries_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=50)
    crow = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
    col = torch.from_numpy(
        np.concatenate([np.sort(rng.choice(500, k, replace=False)) for k in lengths])
    )
    raw = rng.random(int(lengths.sum())).astype(np.float32)
    raw[:5] = raw[5]  # ties
    row = np.repeat(np.arange(50), lengths)
    val = raw / np.bincount(row, weights=raw)[row].astype(np.float32)
    m = SparseRows(crow, col, torch.from_numpy(val))
    budget = 0.2
    heavy, light_mass = join.split_heavy(m, budget)
    for r in range(50):
        values = val[row == r]
        heavy_values = heavy.val[heavy.crow[r] : heavy.crow[r + 1]].numpy()
        light = np.sort(values)[: len(values) - len(heavy_values)]
        assert light.sum() <= budget + 1e-6
        assert abs(light.sum() - float(light_mass[r])) < 1e-6
        # Light entries are the smallest; one more (the first heavy) would pass the budget.
        if len(heavy_values):
            assert light.max(initial=0) <= heavy_values.min()
            assert light.sum() + heavy_values.min() > budget - 1e-6 or light.size == 0


def test_heavy_bound_holds_for_every_pair(small_x, small_ranks):
    # S <= S_HH + lambda_i + lambda_j, brute force over all pairs of a V_qe.
    x, ranks = small_x, small_ranks
    rows, cols = expanded_sets_scipy(ranks, 30, 15)
    v_qe = query_expansion_scipy(gaussian_rows(x, rows, cols, 1 << 12), ranks, 6, 1024)
    heavy, light_mass = join.split_heavy(v_qe, join.light_budget(EPS_CUT))
    dense = sp.csr_matrix((v_qe.val.numpy(), v_qe.col.numpy(), v_qe.crow.numpy())).toarray()
    dense_heavy = sp.csr_matrix(
        (heavy.val.numpy(), heavy.col.numpy(), heavy.crow.numpy()), shape=dense.shape
    ).toarray()
    s = np.minimum(dense[:, None, :], dense[None, :, :]).sum(-1)
    s_hh = np.minimum(dense_heavy[:, None, :], dense_heavy[None, :, :]).sum(-1)
    lam = light_mass.numpy()
    assert np.all(s <= s_hh + lam[:, None] + lam[None, :] + 1e-5)
    assert 0 < lam.max() < join.min_shared_mass(EPS_CUT) / 2


def test_device_dbscan_from_upper_pairs_equals_sklearn(x):
    rows, cols, dist = jaccard_upper_pairs(x, max_distance=0.8)
    matrix = jaccard_distance(x, max_distance=0.8)
    for eps, min_samples in [(0.6, 4), (0.5, 3), (0.7, 6)]:
        expected = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(matrix)
        got = dbscan_upper_pairs(len(x), rows, cols, dist, eps, min_samples)
        np.testing.assert_array_equal(got, expected.labels_)
    assert expected.labels_.max() >= 5


def test_pseudo_labels_on_cuda_path_equals_cpu_path(x, monkeypatch):
    # The device path (torch DBSCAN on the upper pairs) run on CPU tensors.
    config = ClusterConfig()
    expected = pseudo_labels(x, config)
    rows, cols, dist = jaccard_upper_pairs(x, max_distance=EPS_CUT)
    got = dbscan_upper_pairs(len(x), rows, cols, dist, config.eps, config.min_samples)
    np.testing.assert_array_equal(got, expected)


def test_auto_on_cuda_is_the_sparse_torch_backend_never_dense(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # cuML's dense N x N input is only used when asked for by name.
    dbscan_module = importlib.import_module("viewcoop_core.clustering.dbscan")
    monkeypatch.setattr(dbscan_module, "_cuml_unavailable_reason", lambda: None)
    with caplog.at_level(logging.INFO, logger="viewcoop_core.clustering"):
        assert dbscan_module._resolve_backend("auto", 10_000) == "torch"
    assert "auto -> torch" in caplog.text
    matrix = sp.csr_matrix(np.zeros((2, 2), dtype=np.float32))
    monkeypatch.setattr(dbscan_module, "_torch_device", lambda: torch.device("cpu"))
    assert dbscan(matrix, eps=0.5, min_samples=1, backend="auto").tolist() == [0, 1]
