"""The epoch logic shared by the Ray workers and the local loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import load_config
from viewcoop_core.config import ClusterConfig, GraphConfig, OptimConfig
from viewcoop_core.engine.clustering_step import ClusteringStep
from viewcoop_core.engine.epoch import text_has_identity
from viewcoop_core.engine.local_loop import train_locally
from viewcoop_core.engine.train import (
    EpochLabels,
    apply_learning_rates,
    epoch_learning_rates,
    graph_positives,
    nonfinite_terms,
)
from viewcoop_core.models.clip import TINY_MODEL_NAME, build_clip
from viewcoop_core.models.prompts import build_prompt_learner

REPO = Path(__file__).resolve().parents[2]


def smoke_config(tmp_path: Path, *overrides: str):
    """experiments/smoke.yaml with its dataset drawn under ``tmp_path``."""
    from orchestrator.train import absolute_paths, ensure_dataset

    path = REPO / "experiments" / "smoke.yaml"
    cfg = absolute_paths(load_config(path, [f"data.root={tmp_path / 'data'}", *overrides]))
    ensure_dataset(cfg)
    return cfg


@pytest.mark.parametrize("variant", ["coop", "uncoop", "cocoop", "viewcoop_static", "viewcoop"])
def test_text_identity_before_the_first_clustering(variant):
    bundle = build_clip(TINY_MODEL_NAME, image_size=64)
    learner = build_prompt_learner(variant, bundle.model, bundle.tokenizer)
    per_cluster = variant in ("coop", "uncoop")
    assert text_has_identity(learner, None) is not per_cluster
    assert text_has_identity(learner, torch.zeros(3, dtype=torch.long))


def test_withheld_text_labels_leave_a_graph_of_image_clusters_only():
    """CoOp at epoch 1: every text feature is the same sentence. Clustering them would
    make one text cluster and every pair an edge; withheld, no text cluster exists."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32))
    img = np.repeat(centres, 8, axis=0) + 0.05 * rng.normal(size=(48, 32))
    txt = np.tile(rng.normal(size=(1, 32)), (48, 1))  # all alike
    cluster = ClusterConfig(eps=0.6, min_samples=2, k1=6, k2=2, backend="sklearn")
    step = ClusteringStep(cluster, GraphConfig(), true_ids=np.repeat(np.arange(6), 8))
    withheld = step.run(1, img.astype(np.float32), txt.astype(np.float32), text_identity=False)
    assert (withheld.y_txt == -1).all() and withheld.num_txt_clusters == 0
    assert withheld.stats["graph_pairs_dic2"] == 0
    assert withheld.stats["graph_precision_tau1or2"] == pytest.approx(1.0)
    clustered = step.run(1, img.astype(np.float32), txt.astype(np.float32), text_identity=True)
    assert clustered.num_txt_clusters <= 1  # what the first epoch trained on before


def test_learning_rates_follow_the_step_schedule_of_steplr():
    optim = OptimConfig(lr=1.0, prompt_lr=10.0, step_size=3, gamma=0.1)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    optimizer = torch.optim.Adam([{"params": [p], "lr": 0.0} for p in params])
    reference = torch.optim.lr_scheduler.StepLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), step_size=3, gamma=0.1
    )
    for epoch in range(1, 10):
        apply_learning_rates(optimizer, optim, epoch)
        expected = reference.get_last_lr()[0]
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        assert [g["lr"] for g in optimizer.param_groups[1:]] == pytest.approx([10 * expected] * 2)
        assert epoch_learning_rates(optim, epoch)[0] == pytest.approx(expected)
        reference.optimizer.step()
        reference.step()


def test_true_image_labels_replace_the_image_clusters_by_the_ids():
    """The diagnostic ceiling: image pseudo-labels are the true ids (dense 0..K-1) however
    the features cluster; the text side still clusters its own features."""
    rng = np.random.default_rng(1)
    ids = np.repeat(np.array([7, 3, 11, 5]), 6)
    img = rng.normal(size=(24, 16)).astype(np.float32)  # no structure: DBSCAN finds no ids
    cluster = ClusterConfig(eps=0.6, min_samples=2, k1=6, k2=2, backend="sklearn")
    result = ClusteringStep(cluster, GraphConfig(), true_ids=ids, true_image_labels=True).run(
        1, img, img
    )
    expected = np.repeat(np.array([2, 0, 3, 1]), 6)
    np.testing.assert_array_equal(result.y_img, expected)
    assert result.stats["img_ari"] == pytest.approx(1.0)
    assert result.num_img_clusters == 4
    plain = ClusteringStep(cluster, GraphConfig(), true_ids=ids).run(1, img, img)
    assert plain.stats["img_ari"] < 0.5
    with pytest.raises(ValueError, match="true ids"):
        ClusteringStep(cluster, GraphConfig(), true_image_labels=True)


def test_true_text_labels_replace_the_text_clusters_only():
    """The text side's ceiling: text pseudo-labels are the true ids even before any text
    identity exists (the oracle has it), the image side is still clustered, and the graph's
    text-only edges are all same-identity pairs."""
    rng = np.random.default_rng(1)
    ids = np.repeat(np.array([7, 3, 11, 5]), 6)
    img = rng.normal(size=(24, 16)).astype(np.float32)
    cluster = ClusterConfig(eps=0.6, min_samples=2, k1=6, k2=2, backend="sklearn")
    step = ClusteringStep(cluster, GraphConfig(), true_ids=ids, true_text_labels=True)
    plain = ClusteringStep(cluster, GraphConfig(), true_ids=ids).run(1, img, img)
    for identity in (True, False):
        result = step.run(1, img, img, text_identity=identity)
        np.testing.assert_array_equal(result.y_txt, np.repeat(np.array([2, 0, 3, 1]), 6))
        np.testing.assert_array_equal(result.y_img, plain.y_img)
        assert result.stats["txt_ari"] == pytest.approx(1.0)
        assert result.num_txt_clusters == 4
    assert result.stats["graph_precision_txt_only"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="true ids"):
        ClusteringStep(cluster, GraphConfig(), true_text_labels=True)


def test_nonfinite_terms_names_the_loss_terms_only():
    means = {"L_cm": float("nan"), "L_t": 1.0, "loss": float("inf"), "train_s": float("nan")}
    assert nonfinite_terms(means) == ["L_cm", "loss"]


def test_the_local_loop_trains_the_smoke_config_with_diagnostics(tmp_path):
    rows = train_locally(smoke_config(tmp_path, "prompt.variant=coop", "train.epochs=2"))
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert rows[1]["txt_clusters"] == 0  # coop: no text labels before the first clustering
    for row in rows:
        assert 0 <= row["knn_prec_img"] <= 1 and 0 <= row["knn_prec_txt"] <= 1
        assert 0 <= row["mAP"] <= 1
    trained = [row for row in rows if row.get("skipped_training") == 0.0]
    assert trained and all("grad_text_L_t" in row for row in trained)


@pytest.mark.parametrize("tau", [(1, 2), (2,), (0,)])
def test_graph_positives_against_all_samples_match_a_loop(tau):
    y_img = torch.tensor([0, 0, 1, 1, 2, -1, 2, 0, -1, 1])
    y_txt = torch.tensor([3, 0, 0, 1, 1, 1, -1, 3, -1, 2])
    labels = EpochLabels(y_img, y_txt)
    index = torch.tensor([7, 2, 5, 8])

    def same(y, a, b):
        return int(y[a] >= 0 and y[a] == y[b])

    expected = [
        [b != a and same(y_img, a, b) + same(y_txt, a, b) in tau for b in range(len(y_img))]
        for a in index.tolist()
    ]
    got = graph_positives(labels, index, tau, over_all=True, device=torch.device("cpu"))
    assert got.tolist() == expected
    in_batch = graph_positives(labels, index, tau, over_all=False, device=torch.device("cpu"))
    assert in_batch.tolist() == [[row[b] for b in index.tolist()] for row in expected]


@pytest.mark.parametrize("over_all", [True, False])
def test_graph_positives_of_image_mates_or_none_match_a_loop(over_all):
    """loss.graph_positives: ``image`` keeps the mates of the same image pseudo-identity
    (outliers have none, self is never one), whatever the text says; ``none`` keeps none."""
    y_img = torch.tensor([0, 0, 1, 1, 2, -1, 2, 0, -1, 1])
    y_txt = torch.tensor([3, 0, 0, 1, 1, 1, -1, 3, -1, 2])
    labels = EpochLabels(y_img, y_txt)
    index = torch.tensor([7, 2, 5, 8, 0, 3])
    partners = range(len(y_img)) if over_all else index.tolist()
    expected = [
        [b != a and bool(y_img[a] >= 0 and y_img[a] == y_img[b]) for b in partners]
        for a in index.tolist()
    ]
    cpu = torch.device("cpu")
    got = graph_positives(labels, index, (1, 2), over_all, cpu, source="image")
    assert got.tolist() == expected
    assert any(map(any, expected))  # the case is not vacuous
    none = graph_positives(labels, index, (1, 2), over_all, cpu, source="none")
    assert none.shape == got.shape and not none.any()
    with pytest.raises(ValueError, match="'text'"):
        graph_positives(labels, index, (1, 2), over_all, cpu, source="text")


def test_the_local_loop_hands_l_g_the_chosen_positives(tmp_path, monkeypatch):
    """The option reaches the training step: every batch's L_g mask is the image mates."""
    from viewcoop_core.engine import train as train_module

    seen = []

    def recording(labels, index, tau, over_all, device, source="mutual"):
        mask = graph_positives(labels, index, tau, over_all, device, source)
        y = labels.y_img[index]
        mates = (y[:, None] == y[None, :]) & (y[:, None] >= 0) & ~torch.eye(len(y)).bool()
        seen.append((source, torch.equal(mask, mates)))
        return mask

    monkeypatch.setattr(train_module, "graph_positives", recording)
    rows = train_locally(smoke_config(tmp_path, "train.epochs=1", "loss.graph_positives=image"))
    assert rows[1]["skipped_training"] == 0.0
    assert seen and all(item == ("image", True) for item in seen)


def test_the_local_loop_trains_with_the_graph_against_all_samples(tmp_path):
    cfg = smoke_config(
        tmp_path, "train.epochs=1", "loss.graph_scope=all", "loss.graph_weighting=sets"
    )
    rows = train_locally(cfg)
    assert rows[1]["skipped_training"] == 0.0
    # With "sets" each anchor's term is a mean of (1 - cos) plus one of (1 + cos): in [0, 4].
    assert 0 < rows[1]["L_g"] < 4


def test_the_clustering_step_returns_image_features_only_when_asked():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(24, 8)).astype(np.float32)
    cluster = ClusterConfig(eps=0.6, min_samples=2, k1=4, k2=2, backend="sklearn")
    assert ClusteringStep(cluster, GraphConfig()).run(1, img, img).img_features is None
    kept = ClusteringStep(cluster, GraphConfig(), keep_image_features=True).run(1, img, img)
    assert np.array_equal(kept.img_features, img)
