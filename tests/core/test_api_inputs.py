"""Public core functions take NumPy arrays, tensors and lists alike, refuse other kinds
with a TypeError that says what they take, and refuse NaN/Inf features by row count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.clustering.jaccard import jaccard_distance
from viewcoop_core.clustering.knn import nearest_neighbour_ranks
from viewcoop_core.config import ClusterConfig
from viewcoop_core.graph import graph_edges, mutual_dictionary
from viewcoop_core.label_quality import label_quality
from viewcoop_core.losses import cluster_centroids
from viewcoop_core.metrics import pairwise_distance
from viewcoop_core.views import counts_to_ratios, view_counts

ACCEPTED = "NumPy array, a torch tensor"
CONFIG = ClusterConfig(eps=0.5, min_samples=2, k1=4, k2=2, backend="sklearn")


def blobs(n_per: int = 6, ids: int = 4, dim: int = 8, seed: int = 0) -> np.ndarray:
    """float32 [ids * n_per, dim]: tight groups around random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    points = np.repeat(centres, n_per, axis=0) + 0.01 * rng.normal(size=(ids * n_per, dim))
    return points.astype(np.float32)


def test_pseudo_labels_take_numpy_lists_and_tensors_alike():
    """NumPy 2 arrays raised AttributeError ('str' object has no attribute 'type'), lists
    'list' object has no attribute 'ndim'."""
    features = blobs()
    reference = pseudo_labels(torch.from_numpy(features), CONFIG)
    assert len(set(reference.tolist()) - {-1}) == 4
    np.testing.assert_array_equal(pseudo_labels(features, CONFIG), reference)
    np.testing.assert_array_equal(pseudo_labels(features.tolist(), CONFIG), reference)
    np.testing.assert_array_equal(pseudo_labels(features.astype(np.float64), CONFIG), reference)


def test_jaccard_and_nearest_neighbours_take_numpy_and_lists_like_tensors():
    features = blobs()
    tensor = torch.nn.functional.normalize(torch.from_numpy(features), dim=1)
    expected = jaccard_distance(torch.from_numpy(features), k1=4, k2=2).toarray()
    for given in (features, features.tolist()):
        np.testing.assert_array_equal(jaccard_distance(given, k1=4, k2=2).toarray(), expected)
    ranks = nearest_neighbour_ranks(tensor, 5)
    torch.testing.assert_close(nearest_neighbour_ranks(tensor.numpy(), 5), ranks)
    with pytest.raises(TypeError, match=ACCEPTED):
        jaccard_distance("features")
    with pytest.raises(ValueError, match="num_neighbours"):
        nearest_neighbour_ranks(tensor, 0)


@pytest.mark.parametrize("bad", ["features", {"a": 1}, None, [["a", "b"]]])
def test_pseudo_labels_refuse_other_kinds_saying_what_they_take(bad):
    with pytest.raises(TypeError, match=ACCEPTED):
        pseudo_labels(bad, CONFIG)


def test_pseudo_labels_refuse_a_feature_vector_and_a_wrong_config():
    with pytest.raises(ValueError, match=r"2-D \[N, D\]"):
        pseudo_labels(np.zeros(5, dtype=np.float32), CONFIG)
    with pytest.raises(TypeError, match="ClusterConfig"):
        pseudo_labels(blobs(), {"eps": 0.5})


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_counted_not_made_outliers(value):
    """One NaN row used to turn every sample into an outlier with a generic warning."""
    features = blobs()
    features[[3, 17], 2] = value
    with pytest.raises(ValueError, match=r"2 of 24 rows with NaN or Inf values \(rows \[3, 17\]\)"):
        pseudo_labels(features, CONFIG)
    with pytest.raises(ValueError, match="1 of"):
        pseudo_labels(torch.from_numpy(features[3:5]), CONFIG)


def test_evaluation_distances_refuse_non_finite_features():
    features = blobs()
    features[0, 0] = np.nan
    with pytest.raises(ValueError, match="query has 1 of 24 rows with NaN"):
        pairwise_distance(features, blobs())


def test_centroids_take_numpy_and_match_tensors():
    features, labels = blobs(), np.repeat(np.arange(4), 6)
    labels[0] = -1
    expected, counts = cluster_centroids(torch.from_numpy(features), torch.from_numpy(labels))
    got, got_counts = cluster_centroids(features, labels)
    torch.testing.assert_close(got, expected)
    assert got_counts.tolist() == counts.tolist() == [5, 6, 6, 6]
    with pytest.raises(TypeError, match=ACCEPTED):
        cluster_centroids("features", labels)


def test_graph_and_label_functions_take_lists_and_refuse_text():
    y_img, y_txt = [0, 0, 1, -1], [0, 1, 1, -1]
    dic = mutual_dictionary(y_img, y_txt)
    np.testing.assert_array_equal(
        graph_edges(dic.tolist(), tau=[1, 2]), graph_edges(dic, tau=[1, 2])
    )
    for call in (
        lambda: mutual_dictionary("0011", y_txt),
        lambda: graph_edges("dic"),
        lambda: label_quality("labels", [0, 0, 1, 1]),
    ):
        with pytest.raises(TypeError, match=ACCEPTED):
            call()
    assert label_quality(torch.tensor(y_img), np.array([0, 0, 1, 1]))["coverage"] == 0.75


def test_view_functions_take_tensors_and_refuse_text():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, :16] = 1
    np.testing.assert_array_equal(
        view_counts(torch.from_numpy(mask), 16, (32, 32)), view_counts(mask, 16, (32, 32))
    )
    with pytest.raises(TypeError, match=ACCEPTED):
        view_counts("mask", 16)
    with pytest.raises(TypeError, match=ACCEPTED):
        counts_to_ratios("1,2,3,4")
