"""Diagnostics of the cross-modal half against naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viewcoop_core.config import LossConfig
from viewcoop_core.engine.diagnostics import (
    knn_identity_precision,
    loss_gradient_norms,
    text_variance_shares,
)
from viewcoop_core.engine.extract import PromptInputs
from viewcoop_core.engine.train import EpochLabels
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.models.clip import TINY_MODEL_NAME, build_clip
from viewcoop_core.models.model import ViewCoOpModel
from viewcoop_core.models.prompts import build_prompt_learner, clause_orders


def naive_knn_precision(features: np.ndarray, ids: np.ndarray, k: int) -> float:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    shares = []
    for i in range(len(unit)):
        similarity = unit @ unit[i]
        similarity[i] = -np.inf
        nearest = np.argsort(-similarity, kind="stable")[:k]
        shares.append(np.mean(ids[nearest] == ids[i]))
    return float(np.mean(shares))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_knn_precision_matches_a_naive_loop(k):
    rng = np.random.default_rng(k)
    ids = rng.integers(0, 7, size=60)
    features = rng.normal(size=(60, 16)) + 2.0 * np.eye(16)[ids % 16]
    got = knn_identity_precision(torch.from_numpy(features), ids, k=k, block=17)
    assert got == pytest.approx(naive_knn_precision(features, ids, k), abs=1e-9)


def test_knn_precision_is_one_for_separated_and_chance_for_shuffled_ids():
    ids = np.repeat(np.arange(10), 11)
    features = torch.eye(10)[ids] + 0.01 * torch.randn(len(ids), 10)
    assert knn_identity_precision(features, ids, k=10) == 1.0
    assert knn_identity_precision(features, np.random.default_rng(0).permutation(ids)) < 0.4


def build(variant: str, terms: str = "full"):
    torch.manual_seed(0)
    bundle = build_clip(TINY_MODEL_NAME, image_size=64)
    learner = build_prompt_learner(variant, bundle.model, bundle.tokenizer)
    train_text = terms != "baseline"
    return ViewCoOpModel(bundle.model, learner, train_text=train_text), bundle


def test_variance_shares_sum_to_one_and_coop_ignores_views_and_order():
    model, _ = build("viewcoop")
    n = 8
    images = torch.randn(n, 3, 64, 64)
    prompts = PromptInputs(
        torch.tensor([[25, 25, 25, 25], [100, 0, 0, 0], [0, 100, 0, 0], [0, 0, 100, 0]] * 2),
        None,
        clause_orders(n, epoch=1, seed=0),
    )
    shares = text_variance_shares(model, images, prompts)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["txt_var_view"] > 0 and shares["txt_var_order"] > 0

    coop, _ = build("coop")
    # Before the first clustering every image has the same prompt: no shares, not thirds
    # of float32 rounding.
    unclustered = PromptInputs(prompts.view_percent, None, prompts.clause_order)
    assert set(text_variance_shares(coop, images, unclustered).values()) == {0.0}
    coop.prompt_learner.on_clusters_changed(4)
    prompts.cluster_ids = torch.tensor([0, 1, 2, 3, 0, 1, 2, -1])
    shares = text_variance_shares(coop, images, prompts)
    assert shares["txt_var_image"] == pytest.approx(1.0)
    assert shares["txt_var_view"] < 1e-9 and shares["txt_var_order"] < 1e-9


def test_gradient_norms_follow_the_routing_of_eq9():
    model, _ = build("viewcoop")
    loss_fn = ViewCoOpLoss(64, LossConfig(terms="full"))
    y = torch.arange(8) // 2
    loss_fn.reset(torch.randn(4, 64), torch.randn(4, 64))
    batch = {"index": torch.arange(8), "image": torch.randn(8, 3, 64, 64)}
    prompts = PromptInputs(torch.full((8, 4), 25), None, clause_orders(8, epoch=1, seed=0))
    norms = loss_gradient_norms(model, loss_fn, batch, EpochLabels(y, y), prompts, (1, 2))
    for term in ("L_v_ce", "L_v_tri", "L_g"):  # image-only terms
        assert norms[f"grad_text_{term}"] == 0.0 and norms[f"grad_image_{term}"] > 0
    assert norms["grad_image_L_t"] == 0.0 and norms["grad_text_L_t"] > 0
    assert norms["grad_image_L_cm"] > 0 and norms["grad_text_L_cm"] > 0
    assert loss_fn.image_memory.memory.shape == (4, 64)  # the caller's memory is untouched
    assert all(p.grad is None for p in model.parameters())
