"""Camera-aware proxies (``loss.camera_proxies``): labels, the masked cross-entropy
against a naive loop, and the term reaching training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from viewcoop_core.config import ClusterConfig, GraphConfig, LossConfig
from viewcoop_core.engine.clustering_step import ClusteringStep
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.losses.camera_proxies import CameraProxyMemory, camera_proxy_labels


def test_one_proxy_per_cluster_and_camera_outliers_none():
    y = np.array([0, 0, 1, 1, -1, 0, 2])
    cams = np.array([3, 5, 3, 3, 5, 3, 5])
    proxy, proxy_cams = camera_proxy_labels(y, cams)
    # (cluster, camera) pairs in order: (0,3) (0,5) (1,3) (2,5)
    np.testing.assert_array_equal(proxy, [0, 1, 2, 2, -1, 0, 3])
    np.testing.assert_array_equal(proxy_cams, [3, 5, 3, 5])
    empty, none = camera_proxy_labels(np.full(3, -1), np.zeros(3))
    assert (empty == -1).all() and none.size == 0
    with pytest.raises(ValueError, match="must match"):
        camera_proxy_labels(y, cams[:3])


def naive_intra_camera_ce(features, memory, proxy_cams, labels, temperature):
    """Per sample: softmax over the proxies of its own camera only."""
    total, count = 0.0, 0
    for f, label in zip(features, labels):
        if label < 0:
            continue
        cam = proxy_cams[label]
        own = [p for p in range(len(memory)) if proxy_cams[p] == cam]
        logits = {p: float(f @ memory[p]) / temperature for p in own}
        total += -logits[int(label)] + math.log(sum(math.exp(v) for v in logits.values()))
        count += 1
    return total / count


def test_masked_cross_entropy_matches_a_naive_loop():
    torch.manual_seed(0)
    centroids = F.normalize(torch.randn(5, 8), dim=1)
    proxy_cams = torch.tensor([0, 1, 0, 2, 1])
    features = F.normalize(torch.randn(6, 8), dim=1)
    labels = torch.tensor([0, 1, 2, 4, -1, 3])
    memory = CameraProxyMemory(8, temperature=0.1, momentum=0.0)
    memory.reset_proxies(centroids, proxy_cams)
    expected = naive_intra_camera_ce(features, centroids, proxy_cams, labels, 0.1)
    assert float(memory(features, labels)) == pytest.approx(expected, rel=1e-5)
    # Another camera's proxy never competes: moving it changes nothing.
    other = CameraProxyMemory(8, temperature=0.1, momentum=0.0)
    moved = centroids.clone()
    moved[3] = features[0]  # camera 2's proxy, right on sample 0 (camera 0)
    other.reset_proxies(moved, proxy_cams)
    assert float(other(features[:1], labels[:1])) == pytest.approx(
        naive_intra_camera_ce(features[:1], centroids, proxy_cams, labels[:1], 0.1), abs=1e-6
    )


def test_the_term_joins_l_v_with_its_weight_and_needs_proxy_ids():
    torch.manual_seed(1)
    cfg = LossConfig(terms="baseline", camera_proxies=0.5)
    loss = ViewCoOpLoss(8, cfg)
    loss.reset(F.normalize(torch.randn(2, 8), dim=1))
    loss.reset_proxies(F.normalize(torch.randn(3, 8), dim=1), torch.tensor([0, 1, 0]))
    feats = torch.randn(4, 8, requires_grad=True)
    y, proxy = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 2])
    out = loss(feats, None, y, y_proxy=proxy)
    assert "L_v_cam" in out
    torch.testing.assert_close(out["loss"], out["L_v_ce"] + out["L_v_tri"] + out["L_v_cam"])
    with pytest.raises(ValueError, match="y_proxy"):
        loss(feats, None, y)
    assert "L_v_cam" not in ViewCoOpLoss(8, LossConfig(terms="baseline"))(
        feats, None, torch.tensor([-1, -1, -1, -1])
    )


def test_the_clustering_step_returns_proxies_when_it_knows_the_cameras():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    img = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(40, 16))
    img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
    cams = np.tile([0, 1], 20)
    cluster = ClusterConfig(eps=0.5, min_samples=3, k1=8, k2=3, backend="sklearn")
    result = ClusteringStep(cluster, GraphConfig(), camids=cams, device="cpu").run(1, img, img)
    expected, expected_cams = camera_proxy_labels(result.y_img, cams)
    np.testing.assert_array_equal(result.y_proxy, expected)
    np.testing.assert_array_equal(result.proxy_cams, expected_cams)
    assert result.proxy_centroids.shape == (len(expected_cams), 16)
    assert ClusteringStep(cluster, GraphConfig(), device="cpu").run(1, img, img).y_proxy is None
