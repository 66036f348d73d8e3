"""Mutual dictionary (Eq. 3), graph (Eq. 4) and graph statistics against brute force."""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest
import torch

from viewcoop_core.graph import (
    TAU_PRESETS,
    batch_dictionary,
    dictionary_rows,
    graph_edges,
    graph_statistics,
    mutual_dictionary,
    parse_tau,
    tau_name,
)

CPU_BACKENDS = ("numpy", "torch")


# ------------------------------------------------------------ naive references


def naive_dictionary(y_img, y_txt) -> np.ndarray:
    """Eq. 3 pair by pair; -1 (outlier) equals nothing, not even another -1."""
    n = len(y_img)
    dic = np.zeros((n, n), dtype=np.int64)
    for a in range(n):
        for b in range(n):
            same_img = y_img[a] == y_img[b] and y_img[a] != -1
            same_txt = y_txt[a] == y_txt[b] and y_txt[a] != -1
            dic[a, b] = int(same_img) + int(same_txt)
    return dic


def naive_edges(dic: np.ndarray, accepted: set[int], exclude_self: bool) -> np.ndarray:
    n_rows, n_cols = dic.shape
    edges = np.zeros((n_rows, n_cols), dtype=bool)
    for a in range(n_rows):
        for b in range(n_cols):
            edges[a, b] = int(dic[a, b]) in accepted and not (exclude_self and a == b)
    return edges


def naive_same_id(ids) -> np.ndarray:
    n = len(ids)
    same = np.zeros((n, n), dtype=bool)
    for a in range(n):
        for b in range(n):
            same[a, b] = ids[a] == ids[b] and ids[a] != -1
    return same


def random_labels(rng: np.random.Generator, n: int, n_clusters: int, outlier_frac: float):
    y = rng.integers(0, n_clusters, size=n)
    y[rng.random(n) < outlier_frac] = -1
    return y


@pytest.fixture
def labels():
    """N=40 with many outliers, and samples 0 and 1 outliers in both modalities."""
    rng = np.random.default_rng(0)
    y_img = random_labels(rng, 40, 5, 0.3)
    y_txt = random_labels(rng, 40, 4, 0.3)
    y_img[:2] = -1
    y_txt[:2] = -1
    return y_img, y_txt


def as_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------ mutual dictionary


def test_hand_worked_example():
    # 0,1: same in both; 2: outlier in both; 3: image outlier; 3,4: same text only.
    y_img = np.array([0, 0, -1, -1, 1])
    y_txt = np.array([2, 2, -1, 3, 3])
    expected = np.array(
        [
            [2, 2, 0, 0, 0],
            [2, 2, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 2],
        ]
    )
    np.testing.assert_array_equal(mutual_dictionary(y_img, y_txt, backend="numpy"), expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mutual_dictionary_matches_double_loop(labels, backend):
    y_img, y_txt = labels
    dic = mutual_dictionary(y_img, y_txt, backend=backend)
    expected = naive_dictionary(y_img, y_txt)
    np.testing.assert_array_equal(as_numpy(dic), expected)
    assert dic[0, 1] == 0 and dic[1, 0] == 0, "two outliers must not count as the same cluster"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_output_type_and_dtype(labels, backend):
    dic = mutual_dictionary(*labels, backend=backend)
    if backend == "numpy":
        assert isinstance(dic, np.ndarray) and dic.dtype == np.int8
    else:
        assert isinstance(dic, torch.Tensor) and dic.dtype == torch.int8
    assert tuple(dic.shape) == (40, 40)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_diagonal_counts_non_outlier_modalities(labels, backend):
    y_img, y_txt = labels
    dic = as_numpy(mutual_dictionary(y_img, y_txt, backend=backend))
    np.testing.assert_array_equal(np.diag(dic), (y_img != -1).astype(int) + (y_txt != -1))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("max_tile_bytes", [1, 3 * 40 + 7, 1 << 30])
def test_tiling_gives_the_same_result(labels, backend, max_tile_bytes):
    # 1 byte -> one row per tile; 127 bytes -> 3 rows per tile with a ragged last tile.
    y_img, y_txt = labels
    dic = mutual_dictionary(y_img, y_txt, backend=backend, max_tile_bytes=max_tile_bytes)
    np.testing.assert_array_equal(as_numpy(dic), naive_dictionary(y_img, y_txt))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_accepts_numpy_and_torch_inputs_of_any_int_dtype(labels, backend):
    y_img, y_txt = labels
    expected = naive_dictionary(y_img, y_txt)
    for yi, yt in [
        (torch.from_numpy(y_img), torch.from_numpy(y_txt)),
        (y_img.astype(np.int32), torch.from_numpy(y_txt).to(torch.int16)),
        (list(y_img), list(y_txt)),
    ]:
        np.testing.assert_array_equal(
            as_numpy(mutual_dictionary(yi, yt, backend=backend)), expected
        )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_degenerate_label_sets(backend):
    for y_img, y_txt in [
        (np.full(6, -1), np.full(6, -1)),  # all outliers: Dic is all zero
        (np.zeros(6, dtype=int), np.zeros(6, dtype=int)),  # one cluster: all two
        (np.array([3]), np.array([-1])),  # N = 1
        (np.zeros(0, dtype=int), np.zeros(0, dtype=int)),  # N = 0
    ]:
        dic = as_numpy(mutual_dictionary(y_img, y_txt, backend=backend))
        np.testing.assert_array_equal(dic, naive_dictionary(y_img, y_txt).reshape(dic.shape))


def test_explicit_cupy_without_cupy_raises(monkeypatch, labels):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(RuntimeError, match="CuPy"):
        mutual_dictionary(*labels, backend="cupy")


def test_auto_without_cupy_falls_back_to_numpy_and_logs(monkeypatch, labels, caplog):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with caplog.at_level(logging.INFO, logger="viewcoop_core.graph"):
        dic = mutual_dictionary(*labels, backend="auto")
    assert isinstance(dic, np.ndarray)
    assert "backend=auto -> numpy" in caplog.text


@pytest.mark.parametrize(
    ("y_img", "y_txt", "match"),
    [
        (np.array([0, 1, 2]), np.array([0, 1]), "y_txt has 2 labels"),
        (np.array([0, -2, 1]), np.array([0, 1, 1]), "y_img has label -2"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer cluster labels"),
        (np.zeros((2, 2), dtype=int), np.zeros(4, dtype=int), "must be 1-D"),
    ],
)
def test_invalid_labels_raise(y_img, y_txt, match):
    with pytest.raises(ValueError, match=match):
        mutual_dictionary(y_img, y_txt, backend="numpy")


def test_unknown_backend_raises(labels):
    with pytest.raises(ValueError, match="choose one of"):
        mutual_dictionary(*labels, backend="jax")


# --------------------------------------------------------------------- tau


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", {0}),
        ("1", {1}),
        ("1or2", {1, 2}),
        ("2", {2}),
        ("1 or 2", {1, 2}),
        ("1,2", {1, 2}),
        (" 2 , 1 ", {1, 2}),
        (1, {1}),
        (np.int64(2), {2}),
        ([1, 2], {1, 2}),
        ((0,), {0}),
        ({2, 1}, {1, 2}),
        (frozenset({0, 1, 2}), {0, 1, 2}),
        (["1", 2], {1, 2}),
    ],
)
def test_parse_tau_accepted_forms(value, expected):
    assert parse_tau(value) == frozenset(expected)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([], ValueError),
        ("", ValueError),
        (3, ValueError),
        ("-1", ValueError),
        ([0, 3], ValueError),
        ("one", ValueError),
        ("1;2", ValueError),
        (True, TypeError),
        (1.0, TypeError),
        (None, TypeError),
    ],
)
def test_parse_tau_rejects_with_the_allowed_forms(value, error):
    with pytest.raises(error, match="preset name"):
        parse_tau(value)


def test_tau_names_match_presets():
    assert {tau_name(t): t for t in TAU_PRESETS.values()} == TAU_PRESETS


# -------------------------------------------------------------------- graph


@pytest.mark.parametrize("tau", [*TAU_PRESETS, [0, 2], "0,1", {0, 1, 2}])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_graph_edges_match_loop(labels, tau, exclude_self):
    y_img, y_txt = labels
    dic_ref = naive_dictionary(y_img, y_txt)
    expected = naive_edges(dic_ref, set(parse_tau(tau)), exclude_self)
    for dic in (mutual_dictionary(y_img, y_txt, "numpy"), mutual_dictionary(y_img, y_txt, "torch")):
        edges = graph_edges(dic, tau, exclude_self=exclude_self)
        assert type(edges) is type(dic)
        assert edges.dtype in (np.bool_, torch.bool)
        np.testing.assert_array_equal(as_numpy(edges), expected)


def test_graph_edges_row_block_needs_rows_for_self_pairs(labels):
    y_img, y_txt = labels
    rows = np.array([5, 0, 17])
    block = dictionary_rows(y_img, y_txt, rows)
    dense = naive_dictionary(y_img, y_txt)
    expected = naive_edges(dense, {1, 2}, exclude_self=True)[rows]
    np.testing.assert_array_equal(graph_edges(block, "1or2", rows=rows).numpy(), expected)
    with pytest.raises(ValueError, match="pass rows="):
        graph_edges(block, "1or2")


# ----------------------------------------------------------- rows for training


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dictionary_rows_equal_dense_rows(labels, seed):
    y_img, y_txt = labels
    dense = naive_dictionary(y_img, y_txt)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 40, size=7)  # duplicates allowed, as in P x K batches
    cols = rng.permutation(40)[:11]
    got = dictionary_rows(y_img, y_txt, rows, cols)
    assert got.dtype == torch.int8 and tuple(got.shape) == (7, 11)
    np.testing.assert_array_equal(got.numpy(), dense[np.ix_(rows, cols)])
    all_cols = dictionary_rows(
        torch.from_numpy(y_img), torch.from_numpy(y_txt), torch.from_numpy(rows)
    )
    np.testing.assert_array_equal(all_cols.numpy(), dense[rows])


def test_dictionary_rows_with_unsigned_labels():
    # uint8 labels have no outliers; ids up to 255 must not collide with the -2 key.
    y_img = np.array([0, 255, 3, 255], dtype=np.uint8)
    y_txt = np.array([-1, -1, 2, 2])
    got = dictionary_rows(torch.from_numpy(y_img), y_txt, [0, 1, 3])
    np.testing.assert_array_equal(
        got.numpy(), naive_dictionary(y_img.astype(int), y_txt)[[0, 1, 3]]
    )


def test_batch_dictionary_is_dic_of_the_batch(labels):
    y_img, y_txt = labels
    batch = np.array([3, 9, 0, 1, 3, 22])
    got = batch_dictionary(torch.from_numpy(y_img[batch]), torch.from_numpy(y_txt[batch]))
    np.testing.assert_array_equal(got.numpy(), naive_dictionary(y_img, y_txt)[np.ix_(batch, batch)])


# --------------------------------------------------------------- statistics


def dense_statistics(y_img, y_txt, ids, taus) -> dict[str, float]:
    """The same numbers as graph_statistics, counted on dense N x N matrices."""
    n = len(y_img)
    off_diag = ~np.eye(n, dtype=bool)
    dic = naive_dictionary(y_img, y_txt)
    same_id = naive_same_id(ids) & off_diag
    same_img = naive_same_id(y_img) & off_diag
    same_txt = naive_same_id(y_txt) & off_diag

    def ratio(a, b):
        return a / b if b else 0.0

    out = {"pairs": n * (n - 1), "same_id_pairs": same_id.sum()}
    for v in (0, 1, 2):
        out[f"pairs_dic{v}"] = ((dic == v) & off_diag).sum()
    for tau in taus:
        edges = np.isin(dic, list(tau)) & off_diag
        name = tau_name(tau)
        out[f"edges_tau{name}"] = edges.sum()
        out[f"density_tau{name}"] = ratio(edges.sum(), n * (n - 1))
        out[f"precision_tau{name}"] = ratio((edges & same_id).sum(), edges.sum())
        out[f"recall_tau{name}"] = ratio((edges & same_id).sum(), same_id.sum())
    for key, rel in (("img", same_img), ("txt", same_txt)):
        out[f"precision_{key}"] = ratio((rel & same_id).sum(), rel.sum())
        out[f"recall_{key}"] = ratio((rel & same_id).sum(), same_id.sum())
    for key, rel in (("txt_only", same_txt & ~same_img), ("img_only", same_img & ~same_txt)):
        out[f"precision_{key}"] = ratio((rel & same_id).sum(), rel.sum())
        out[f"recall_{key}"] = ratio((rel & same_id).sum(), same_id.sum())
    return out


@pytest.mark.parametrize("seed", range(4))
def test_graph_statistics_equal_dense_counts(seed):
    rng = np.random.default_rng(100 + seed)
    n = 60
    ids = random_labels(rng, n, 8, 0.0 if seed % 2 else 0.1)
    # Pseudo-labels that partly follow the identities, so precision/recall are not trivial.
    y_img = np.where(rng.random(n) < 0.6, ids % 6, rng.integers(0, 6, n))
    y_txt = np.where(rng.random(n) < 0.5, ids % 5, rng.integers(0, 5, n))
    y_img[rng.random(n) < 0.25] = -1
    y_txt[rng.random(n) < 0.25] = -1
    taus = [*TAU_PRESETS.values(), frozenset({0, 2})]

    stats = graph_statistics(y_img, y_txt, taus=taus, true_ids=ids)
    expected = dense_statistics(y_img, y_txt, ids, taus)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(float(value), abs=1e-12), key
    assert stats["outliers_img"] == (y_img == -1).sum()
    assert stats["clusters_txt"] == len(set(y_txt[y_txt != -1].tolist()))
    assert stats["pairs_dic0"] + stats["pairs_dic1"] + stats["pairs_dic2"] == n * (n - 1)


def test_graph_statistics_accepts_torch_and_omits_identity_keys_without_ids(labels):
    y_img, y_txt = labels
    stats = graph_statistics(torch.from_numpy(y_img), torch.from_numpy(y_txt))
    expected = dense_statistics(y_img, y_txt, np.full(40, -1), TAU_PRESETS.values())
    assert stats["edges_tau1or2"] == expected["edges_tau1or2"]
    assert not any(k.startswith(("precision", "recall")) for k in stats)


@pytest.mark.parametrize(
    ("y_img", "y_txt", "ids"),
    [
        (np.full(5, -1), np.full(5, -1), np.arange(5)),  # all outliers: no edges
        (np.array([0]), np.array([0]), np.array([0])),  # N = 1: no pairs at all
        (np.zeros(5, dtype=int), np.zeros(5, dtype=int), np.zeros(5, dtype=int)),  # one cluster
        (np.zeros(4, dtype=int), np.zeros(4, dtype=int), np.arange(4)),  # no same-id pairs
        (np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0, dtype=int)),  # N = 0
    ],
)
def test_graph_statistics_degenerate_inputs_are_finite(y_img, y_txt, ids):
    stats = graph_statistics(y_img, y_txt, true_ids=ids)
    assert all(math.isfinite(v) for v in stats.values())
    expected = dense_statistics(y_img, y_txt, ids, TAU_PRESETS.values())
    for key, value in expected.items():
        assert stats[key] == pytest.approx(float(value)), key


def test_graph_statistics_one_cluster_is_perfect():
    ones = np.zeros(5, dtype=int)
    stats = graph_statistics(ones, ones, true_ids=ones)
    assert stats["density_tau2"] == 1.0
    assert stats["precision_tau1or2"] == 1.0 and stats["recall_tau1or2"] == 1.0
    assert stats["edges_tau0"] == 0.0 and stats["precision_tau0"] == 0.0
