"""Losses (Eq. 6-9) and cluster memories against per-sample Python loops."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from viewcoop_core.config import LossConfig
from viewcoop_core.losses import (
    ViewCoOpLoss,
    batch_hard_triplet,
    cross_modal_infonce,
    cross_modal_loss,
    graph_constraint_loss,
)
from viewcoop_core.losses.memory import ClusterMemory, cluster_centroids, momentum_update
from viewcoop_core.vocabulary import LOSS_PRESETS, parse_losses

B, D = 8, 5
ATOL = 1e-6


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(rows: int, dim: int = D, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=_gen(seed), dtype=torch.float64), dim=1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.tolist(), b.tolist()
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _normalised(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


# Repeats in non-adjacent positions (sample order matters) and outliers.
LABELS = torch.tensor([2, 0, -1, 2, 1, 0, 2, -1])


# ---------------------------------------------------------------- cluster centroids


def test_cluster_centroids_match_loop():
    feats = _unit(B, seed=1)
    centroids, counts = cluster_centroids(feats, LABELS)
    assert centroids.shape == (3, D) and counts.tolist() == [2, 1, 3]
    for c in range(3):
        members = [feats[i].tolist() for i in range(B) if int(LABELS[i]) == c]
        mean = [sum(col) / len(members) for col in zip(*members)]
        assert centroids[c].tolist() == pytest.approx(_normalised(mean), abs=ATOL)


def test_cluster_centroids_all_outliers_and_empty_id():
    centroids, counts = cluster_centroids(_unit(4), torch.full((4,), -1))
    assert centroids.shape == (0, D) and counts.shape == (0,)
    centroids, counts = cluster_centroids(_unit(3), torch.tensor([0, 2, 2]))
    assert counts.tolist() == [1, 0, 2]
    assert torch.all(centroids[1] == 0) and torch.isfinite(centroids).all()


# ---------------------------------------------------------------- cluster memory


def _memory_loop(memory: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, temp, mom):
    """Reference: mean CE over valid samples, then Cluster Contrast's per-sample update."""
    rows = [r.tolist() for r in memory]
    losses = []
    for f, y in zip(feats.tolist(), labels.tolist()):
        if y == -1:
            continue
        logits = [sum(a * b for a, b in zip(f, m)) / temp for m in rows]
        log_z = math.log(sum(math.exp(z) for z in logits))
        losses.append(log_z - logits[y])
    for f, y in zip(feats.tolist(), labels.tolist()):
        if y == -1:
            continue
        rows[y] = _normalised([mom * m + (1 - mom) * x for m, x in zip(rows[y], f)])
    return sum(losses) / len(losses), rows


def test_memory_loss_and_momentum_update_match_per_sample_loop():
    centroids = _unit(3, seed=2)
    feats = _unit(B, seed=3)
    mem = ClusterMemory(D, temperature=0.05, momentum=0.2).double()
    mem.reset(centroids)
    loss = mem(feats, LABELS)
    ref_loss, ref_rows = _memory_loop(centroids, feats, LABELS, 0.05, 0.2)
    assert loss.item() == pytest.approx(ref_loss, abs=ATOL)
    for c in range(3):
        assert mem.memory[c].tolist() == pytest.approx(ref_rows[c], abs=ATOL)


def test_momentum_update_follows_batch_order():
    # Label 0 three times in shuffled positions: a batch-mean update would differ.
    memory = _unit(2, seed=4)
    feats = _unit(6, seed=5)
    labels = torch.tensor([0, 1, 0, -1, 1, 0])
    updated = momentum_update(memory, feats, labels, momentum=0.5)
    _, ref_rows = _memory_loop(memory, feats, labels, 1.0, 0.5)
    assert updated.tolist() == [pytest.approx(r, abs=ATOL) for r in ref_rows]
    assert memory.tolist() != updated.tolist()  # input left untouched, output changed
    reordered = momentum_update(memory, feats[[5, 1, 2, 3, 4, 0]], labels, momentum=0.5)
    assert not torch.allclose(reordered[0], updated[0])


def test_memory_gradient_reaches_features_only():
    centroids = _unit(3, seed=6)
    feats = _unit(B, seed=7).requires_grad_()
    mem = ClusterMemory(D).double()
    mem.reset(centroids)
    mem(feats, LABELS).backward()

    ref_feats = feats.detach().clone().requires_grad_()
    valid = [i for i in range(B) if LABELS[i] >= 0]
    ref = sum(
        -torch.log_softmax(ref_feats[i] @ centroids.t() / 0.05, dim=0)[LABELS[i]] for i in valid
    ) / len(valid)
    ref.backward()
    assert torch.allclose(feats.grad, ref_feats.grad, atol=ATOL)
    assert not mem.memory.requires_grad
    assert torch.all(feats.grad[LABELS == -1] == 0)


def test_memory_reset_resizes_normalises_and_stays_out_of_state_dict():
    mem = ClusterMemory(D)
    mem.reset(3.0 * torch.randn(4, D, generator=_gen(8)))
    assert mem.num_clusters == 4
    assert torch.allclose(mem.memory.norm(dim=1), torch.ones(4))
    mem.reset(torch.zeros(0, D))
    assert mem.num_clusters == 0
    assert "memory" not in mem.state_dict()
    with pytest.raises(ValueError, match=r"centroids must be \[C, 5\]"):
        mem.reset(torch.zeros(2, D + 1))


def test_memory_label_outside_memory_raises():
    mem = ClusterMemory(D)
    mem.reset(torch.randn(2, D, generator=_gen(9)))
    with pytest.raises(ValueError, match="reset"):
        mem(_unit(2).float(), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="cluster ids >= 0 or -1"):
        mem(_unit(2).float(), torch.tensor([0, -2]))
    with pytest.raises(ValueError, match="integer cluster ids"):
        mem(_unit(2).float(), torch.tensor([0.0, 1.0]))


def test_memory_accepts_int32_labels_from_the_clustering_actor():
    mem = ClusterMemory(D).double()
    mem.reset(_unit(3, seed=2))
    feats = _unit(B, seed=3)
    assert mem(feats, LABELS.int()).item() == pytest.approx(
        _memory_loop(_unit(3, seed=2), feats, LABELS, 0.05, 0.2)[0], abs=ATOL
    )


# ---------------------------------------------------------------- Eq. 6, Eq. 8, triplet


def test_batch_hard_triplet_matches_loop():
    feats = torch.randn(B, D, generator=_gen(10), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, -1, 0])  # label 2: no positive; -1 ignored
    margin = 0.3

    def dist(i, j):
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(feats[i].tolist(), feats[j].tolist())))

    hinges = []
    for a in range(B):
        if labels[a] == -1:
            continue
        pos = [dist(a, p) for p in range(B) if p != a and labels[p] == labels[a]]
        neg = [dist(a, n) for n in range(B) if labels[n] not in (labels[a], -1)]
        if pos and neg:
            hinges.append(max(0.0, max(pos) - min(neg) + margin))
    assert len(hinges) == 6
    expected = sum(hinges) / len(hinges)
    assert batch_hard_triplet(feats, labels, margin).item() == pytest.approx(expected, abs=ATOL)


def test_graph_constraint_loss_matches_loop():
    feats = torch.randn(B, D, generator=_gen(11), dtype=torch.float64)
    positive = torch.rand(B, B, generator=_gen(12)) < 0.4  # random, diagonal included
    total = 0.0
    for j in range(B):
        for k in range(B):
            if k == j:
                continue
            s = _cos(feats[j], feats[k])
            total += (1 - s) if positive[j, k] else (1 + s)
    expected = total / (B * (B - 1))
    assert graph_constraint_loss(feats, positive).item() == pytest.approx(expected, abs=ATOL)


def _graph_loop(anchors, partners, positive, self_index, weighting):
    """Eq. 6 by hand: per anchor, its (1 - cos) over neighbours and (1 + cos) over the rest."""
    pair_terms, per_anchor = [], []
    for j in range(anchors.shape[0]):
        pulled, pushed = [], []
        for k in range(partners.shape[0]):
            if k == self_index[j]:
                continue
            s = _cos(anchors[j], partners[k])
            (pulled if positive[j, k] else pushed).append((1 - s) if positive[j, k] else (1 + s))
        pair_terms += pulled + pushed
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        per_anchor.append(mean(pulled) + mean(pushed))
    if weighting == "pairs":
        return sum(pair_terms) / len(pair_terms)
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("weighting", ["pairs", "sets"])
def test_graph_constraint_loss_against_all_partners_matches_loop(weighting):
    n = 13
    feats = torch.randn(B, D, generator=_gen(21), dtype=torch.float64)
    partners = torch.randn(n, D, generator=_gen(22), dtype=torch.float64)
    positive = torch.rand(B, n, generator=_gen(23)) < 0.3
    self_index = torch.tensor([3, 0, 12, -1, 5, 7, 1, 9])  # anchor 3 has no row of its own
    expected = _graph_loop(feats, partners, positive, self_index.tolist(), weighting)
    got = graph_constraint_loss(
        feats, positive, partners=partners, self_index=self_index, weighting=weighting
    )
    assert got.item() == pytest.approx(expected, abs=ATOL)
    # In-batch is the special case partners = the batch, self = the diagonal.
    square = torch.rand(B, B, generator=_gen(24)) < 0.4
    diagonal = list(range(B))
    assert graph_constraint_loss(feats, square, weighting=weighting).item() == pytest.approx(
        _graph_loop(feats, feats, square, diagonal, weighting), abs=ATOL
    )


def test_graph_constraint_loss_against_partners_differentiates_the_anchors_only():
    feats = torch.randn(B, D, generator=_gen(25), dtype=torch.float64, requires_grad=True)
    partners = torch.randn(6, D, generator=_gen(26), dtype=torch.float64, requires_grad=True)
    positive = torch.rand(B, 6, generator=_gen(27)) < 0.5
    index = torch.full((B,), -1)
    graph_constraint_loss(feats, positive, partners=partners, self_index=index).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert partners.grad is None
    with pytest.raises(ValueError, match="self_index"):
        graph_constraint_loss(feats, positive, partners=partners)
    with pytest.raises(ValueError, match=r"bool \[8, 6\]"):
        graph_constraint_loss(feats, positive[:, :5], partners=partners, self_index=index)
    with pytest.raises(ValueError, match="weighting"):
        graph_constraint_loss(feats, positive, partners=partners, self_index=index, weighting="x")


def test_viewcoop_loss_graph_over_all_reads_and_updates_the_instance_memory():
    n = 10
    memory_rows = _unit(n, seed=28).float()
    loss_fn = ViewCoOpLoss(D, LossConfig(terms=["v", "g"], graph_scope="all"))
    assert loss_fn.graph_over_all
    loss_fn.reset(_unit(3, seed=29).float())
    img = _unit(4, seed=30).float()
    y_img = torch.tensor([0, 0, 1, 2])
    positive = torch.rand(4, n, generator=_gen(31)) < 0.5
    index = torch.tensor([2, 5, 7, 9])
    with pytest.raises(ValueError, match="reset_instances"):
        loss_fn(img, None, y_img, None, positive, batch_index=index)
    loss_fn.reset_instances(3.0 * memory_rows)  # normalised on the way in
    with pytest.raises(ValueError, match="batch_index"):
        loss_fn(img, None, y_img, None, positive)
    out = loss_fn(img, None, y_img, None, positive, batch_index=index)
    expected = _graph_loop(img.double(), memory_rows.double(), positive, index.tolist(), "pairs")
    assert out["L_g"].item() == pytest.approx(expected, abs=1e-5)
    # The batch's rows moved toward the batch features (momentum 0.2); the others stayed.
    updated = loss_fn.instance_memory.memory
    moved = F.normalize(0.2 * memory_rows[index] + 0.8 * img, dim=1)
    assert torch.allclose(updated[index], moved, atol=1e-6)
    untouched = torch.tensor([i for i in range(n) if i not in index.tolist()])
    assert torch.allclose(updated[untouched], memory_rows[untouched], atol=1e-6)
    # Off by default: the batch is the scope and no memory is needed.
    assert not ViewCoOpLoss(D, LossConfig(terms=["v", "g"])).graph_over_all
    assert not ViewCoOpLoss(D, LossConfig(terms=["v"], graph_scope="all")).graph_over_all


def test_cross_modal_loss_matches_loop():
    img = torch.randn(B, D, generator=_gen(13), dtype=torch.float64)
    txt = torch.randn(B, D, generator=_gen(14), dtype=torch.float64)
    total = 0.0
    for j in range(B):
        for k in range(B):
            s = _cos(img[j], txt[k])
            total += (1 - s) if j == k else (1 + s)
    assert cross_modal_loss(img, txt).item() == pytest.approx(total / B**2, abs=ATOL)
    # Swapping the modalities transposes the similarity matrix; the full-matrix sum stays.
    assert cross_modal_loss(txt, img).item() == pytest.approx(total / B**2, abs=ATOL)


# ---------------------------------------------------------------- presets and composition


def test_presets_follow_table_1():
    assert LOSS_PRESETS["baseline"] == {"v"}
    assert LOSS_PRESETS["+viewcoop"] == {"v", "t", "cm"}
    assert LOSS_PRESETS["+cmg"] == {"v", "g"}
    assert LOSS_PRESETS["full"] == {"v", "t", "g", "cm"}
    assert parse_losses("full") == {"v", "t", "g", "cm"}
    assert parse_losses(["v", "g"]) == {"v", "g"}
    assert parse_losses("v, cm") == {"v", "cm"}
    assert parse_losses("t") == {"t"}


@pytest.mark.parametrize("bad", ["fulll", ["v", "x"], [], ""])
def test_parse_losses_errors_list_allowed_values(bad):
    with pytest.raises(ValueError, match=r"baseline.*\['v', 't', 'g', 'cm'\]"):
        parse_losses(bad)


def _batch(seed: int = 20):
    """P=4 x K=2 batch: image/text features, labels, a graph containing the clusters."""
    g = _gen(seed)
    img = torch.randn(B, D, generator=g, dtype=torch.float64)
    txt = torch.randn(B, D, generator=g, dtype=torch.float64)
    y_img = torch.arange(4).repeat_interleave(2)
    y_txt = torch.tensor([0, 0, 1, 2, 2, 3, 3, 1])
    positive = (y_img[:, None] == y_img[None, :]) | (y_txt[:, None] == y_txt[None, :])
    return img, txt, y_img, y_txt, positive


def _loss_module(terms, img, txt, y_img, y_txt) -> ViewCoOpLoss:
    module = ViewCoOpLoss(D, LossConfig(terms=terms)).double()
    img_c, _ = cluster_centroids(F.normalize(img.detach(), dim=1), y_img)
    txt_c, _ = cluster_centroids(F.normalize(txt.detach(), dim=1), y_txt)
    module.reset(img_c, txt_c)
    return module


KEYS = {"v": {"L_v_ce", "L_v_tri"}, "t": {"L_t"}, "g": {"L_g"}, "cm": {"L_cm"}}


@pytest.mark.parametrize("preset", sorted(LOSS_PRESETS))
def test_viewcoop_loss_returns_active_terms_and_their_sum(preset):
    img, txt, y_img, y_txt, positive = _batch()
    out = _loss_module(preset, img, txt, y_img, y_txt)(img, txt, y_img, y_txt, positive)
    expected_keys = set().union(*(KEYS[t] for t in LOSS_PRESETS[preset])) | {"loss"}
    assert set(out) == expected_keys
    parts = [v.item() for k, v in out.items() if k != "loss"]
    assert out["loss"].item() == pytest.approx(sum(parts), abs=ATOL)


def test_viewcoop_loss_terms_equal_standalone_functions_and_ignore_feature_norm():
    img, txt, y_img, y_txt, positive = _batch()
    out = _loss_module("full", img, txt, y_img, y_txt)(img, txt, y_img, y_txt, positive)
    img_u, txt_u = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    assert out["L_v_tri"].item() == pytest.approx(batch_hard_triplet(img_u, y_img).item(), abs=ATOL)
    assert out["L_g"].item() == pytest.approx(graph_constraint_loss(img, positive).item(), abs=ATOL)
    assert out["L_cm"].item() == pytest.approx(cross_modal_loss(img, txt).item(), abs=ATOL)
    ref_t, _ = _memory_loop(cluster_centroids(txt_u, y_txt)[0], txt_u, y_txt, 0.05, 0.2)
    assert out["L_t"].item() == pytest.approx(ref_t, abs=ATOL)
    # Scaled features give the same losses: everything is on the unit sphere.
    scaled = _loss_module("full", img, txt, y_img, y_txt)(3 * img, 7 * txt, y_img, y_txt, positive)
    for key in out:
        assert scaled[key].item() == pytest.approx(out[key].item(), abs=ATOL)


def test_viewcoop_loss_missing_inputs_name_the_term():
    img, txt, y_img, y_txt, _ = _batch()
    module = _loss_module("full", img, txt, y_img, y_txt)
    with pytest.raises(ValueError, match=r"text_features.*graph_positive"):
        module(img, None, y_img, y_txt, None)
    with pytest.raises(ValueError, match="txt_centroids"):
        module.reset(torch.zeros(1, D, dtype=torch.float64))


# ---------------------------------------------------------------- degenerate states


@pytest.mark.parametrize("batch", [1, 4])
def test_degenerate_inputs_give_finite_losses_and_zero_gradients(batch, caplog):
    caplog.set_level(logging.DEBUG, logger="viewcoop_core.losses.memory")
    img = torch.randn(batch, D, generator=_gen(30), requires_grad=True)
    txt = torch.randn(batch, D, generator=_gen(31), requires_grad=True)
    outliers = torch.full((batch,), -1)
    no_edges = torch.zeros(batch, batch, dtype=torch.bool)

    empty = ViewCoOpLoss(D, LossConfig(terms="full"))  # never reset: both memories empty
    out = empty(img, txt, outliers, outliers, no_edges)
    assert all(torch.isfinite(v) for v in out.values())
    assert "cluster memory: zero loss" in caplog.text
    out["L_v_ce"].backward(retain_graph=True)
    assert img.grad is not None and torch.all(img.grad == 0)

    img.grad = None
    filled = ViewCoOpLoss(D, LossConfig(terms=["v", "t"]))
    filled.reset(torch.randn(3, D, generator=_gen(32)), torch.randn(3, D, generator=_gen(33)))
    memory_before = filled.image_memory.memory.clone()
    out = filled(img, txt, outliers, outliers)  # memories filled, all labels -1
    assert all(torch.isfinite(v) for v in out.values()) and out["loss"].item() == 0.0
    out["loss"].backward()
    for grad in (img.grad, txt.grad):
        assert grad is not None and torch.all(grad == 0)
    assert torch.equal(filled.image_memory.memory, memory_before)


def test_triplet_without_positives_is_zero_in_graph():
    feats = torch.randn(4, D, generator=_gen(34), requires_grad=True)
    loss = batch_hard_triplet(feats, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(feats.grad == 0)


# ---------------------------------------------------------------- gradient routing

ROUTES = {
    "L_v_ce": {"image_encoder"},
    "L_v_tri": {"image_encoder"},
    "L_g": {"image_encoder"},
    "L_t": {"meta_net", "text_encoder"},
    "L_cm": {"image_encoder", "meta_net", "text_encoder"},
}


@pytest.mark.parametrize("term", sorted(ROUTES))
def test_gradient_routing_with_detached_meta_net_input(term):
    torch.manual_seed(40)
    modules = nn.ModuleDict(
        {
            "image_encoder": nn.Linear(6, D),
            "meta_net": nn.Linear(D, 6),  # prompt bias from the DETACHED image feature
            "text_encoder": nn.Linear(6, D),
        }
    ).double()
    images = torch.randn(B, 6, dtype=torch.float64)
    prompts = torch.randn(B, 6, dtype=torch.float64)
    image_features = modules["image_encoder"](images)
    text_features = modules["text_encoder"](prompts + modules["meta_net"](image_features.detach()))
    _, _, y_img, y_txt, positive = _batch()
    loss_fn = _loss_module("full", image_features, text_features, y_img, y_txt)
    out = loss_fn(image_features, text_features, y_img, y_txt, positive)
    assert out[term].item() > 0
    out[term].backward()
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        if name in ROUTES[term]:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), name
        else:
            assert all(g is None for g in grads), name


def test_gathered_memory_update_keeps_ranks_identical():
    """Two simulated ranks, each seeing its own batch but updating with both (rank order),
    end with the same memory as one process updating with the concatenated batch."""
    torch.manual_seed(3)
    centroids = torch.randn(4, 6)
    feats = [F.normalize(torch.randn(5, 6), dim=1) for _ in range(2)]
    labels = [torch.randint(0, 4, (5,)) for _ in range(2)]

    def gather(_f, _l):
        return torch.cat(feats), torch.cat(labels)

    ranks = []
    for r in range(2):
        memory = ClusterMemory(6, gather=gather)
        memory.reset(centroids)
        memory(feats[r], labels[r])
        ranks.append(memory.memory)
    reference = ClusterMemory(6)
    reference.reset(centroids)
    reference(torch.cat(feats), torch.cat(labels))
    assert torch.allclose(ranks[0], ranks[1])
    assert torch.allclose(ranks[0], reference.memory)


def test_gather_runs_even_when_the_batch_has_no_valid_label():
    """Data-parallel ranks must all enter the collective, whatever their batch holds."""
    calls = []

    def gather(f, lab):
        calls.append(len(lab))
        return f, lab

    memory = ClusterMemory(4, gather=gather)
    memory.reset(torch.randn(3, 4))
    before = memory.memory.clone()
    loss = memory(F.normalize(torch.randn(5, 4), dim=1), torch.full((5,), -1))
    assert calls == [5] and float(loss) == 0.0
    assert torch.equal(memory.memory, before)
    empty = ClusterMemory(4, gather=gather)
    empty(F.normalize(torch.randn(2, 4), dim=1), torch.tensor([-1, -1]))
    assert calls == [5, 2]


# ------------------------------------------------------------------ L_cm, CLIP form


def naive_infonce(image, text, temperature, positive):
    """Per-row loops: log-softmax over a row, averaged over that row's positives."""
    image = F.normalize(image, dim=1)
    text = F.normalize(text, dim=1)
    batch = image.shape[0]
    logits = [[float(image[j] @ text[k]) / temperature for k in range(batch)] for j in range(batch)]

    def direction(rows, pos):
        total = 0.0
        for j in range(batch):
            denominator = math.log(sum(math.exp(v) for v in rows[j]))
            hits = [k for k in range(batch) if pos(j, k)]
            total += -sum(rows[j][k] - denominator for k in hits) / len(hits)
        return total / batch

    columns = [[logits[j][k] for j in range(batch)] for k in range(batch)]
    return (
        direction(logits, lambda j, k: positive[j][k])
        + direction(columns, lambda j, k: positive[k][j])
    ) / 2


@pytest.mark.parametrize("with_clusters", [False, True])
def test_cross_modal_infonce_matches_a_naive_loop(with_clusters):
    generator = torch.Generator().manual_seed(3)
    image, text = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    positive = None
    table = [[j == k for k in range(6)] for j in range(6)]
    if with_clusters:
        positive = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
        table = [[j == k or bool(positive[j, k]) for k in range(6)] for j in range(6)]
    got = cross_modal_infonce(image, text, 0.07, positive)
    assert float(got) == pytest.approx(naive_infonce(image, text, 0.07, table), rel=1e-5)


def test_cross_modal_infonce_with_distinct_pairs_is_clips_loss():
    generator = torch.Generator().manual_seed(4)
    image, text = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    logits = F.normalize(image, dim=1) @ F.normalize(text, dim=1).t() / 0.1
    clip = (
        F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))
    ) / 2
    assert float(cross_modal_infonce(image, text, 0.1)) == pytest.approx(float(clip), rel=1e-6)


def test_loss_options_choose_the_cm_form_and_the_text_targets():
    generator = torch.Generator().manual_seed(5)
    image, text = torch.randn(8, D, generator=generator), torch.randn(8, D, generator=generator)
    y_img = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    y_txt = torch.tensor([1, 1, 1, 0, 0, 0, -1, -1])
    config = LossConfig(
        terms=["t", "cm"], cm_form="clip", cm_temperature=0.1, text_targets="image_clusters"
    )
    module = ViewCoOpLoss(D, config)
    by_image = torch.randn(4, D, generator=generator)
    module.reset(torch.randn(4, D, generator=generator), by_image)
    out = module(image, text, y_img, y_txt)
    expected_t = F.cross_entropy(
        F.normalize(text, dim=1) @ F.normalize(by_image, dim=1).t() / 0.05, y_img
    )
    assert float(out["L_t"]) == pytest.approx(float(expected_t), rel=1e-5)
    assert float(out["L_cm"]) == pytest.approx(
        float(cross_modal_infonce(image, text, 0.1)), rel=1e-6
    )
