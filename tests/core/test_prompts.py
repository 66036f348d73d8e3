"""Prompt learners on the tiny CLIP, checked against the real tokenizer and naive scans."""

from __future__ import annotations

import pytest
import torch

from viewcoop_core.models.clip import TINY_MODEL_NAME, build_clip
from viewcoop_core.models.prompts import (
    build_prompt_learner,
    clause_orders,
    encode_prompts,
)
from viewcoop_core.vocabulary import PROMPT_VARIANTS, VIEW_NAMES

BATCH = 12
VIEW_WORDS = {"view", "percent", "proportions"}


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    bundle = build_clip(TINY_MODEL_NAME, image_size=None)
    bundle.model.eval()
    return bundle


@pytest.fixture(scope="module")
def batch_inputs():
    generator = torch.Generator().manual_seed(7)
    view_percent = torch.randint(0, 101, (BATCH, 4), generator=generator)
    view_percent[0] = torch.tensor([100, 0, 7, 42])  # one, two and three digits in one row
    view_percent[1] = torch.tensor([0, 0, 0, 100])
    return {
        "image_features": torch.randn(BATCH, 64, generator=generator),
        "view_percent": view_percent,
        "clause_order": clause_orders(BATCH, epoch=0, seed=3),
    }


def naive_sentence(percent: list[int], order: list[int]) -> str:
    clauses = [f"{VIEW_NAMES[v]} view is {percent[v]} percent" for v in order]
    return "A photo of a X X X X vehicle with the proportions of " + ", ".join(clauses) + "."


def naive_digit_positions(tokens: list[int], view: int, tokenizer) -> list[int]:
    """Scan a tokenised sentence for '<view> view is' and collect the digits after it."""
    head = tokenizer.encode(f"{VIEW_NAMES[view]} view is")
    percent_id = tokenizer.encode("percent")[0]
    for start in range(len(tokens) - len(head)):
        if tokens[start : start + len(head)] == head:
            position = start + len(head)
            positions = []
            while tokens[position] != percent_id:
                positions.append(position)
                position += 1
            return positions
    raise AssertionError(f"clause for {VIEW_NAMES[view]} not found")


def words_of(token_ids: torch.Tensor, tokenizer) -> list[str]:
    return [tokenizer.decoder[int(t)].removesuffix("</w>") for t in token_ids]


def test_clip_bpe_splits_numbers_into_one_token_per_digit(clip):
    encode = clip.tokenizer.encode
    assert encode("37") == encode("3") + encode("7")
    assert encode("100") == encode("1") + encode("0") + encode("0")
    assert all(len(encode(str(d))) == 1 for d in range(10))


def test_viewcoop_token_ids_equal_tokenizing_each_sentence(clip, batch_inputs):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    batch = learner(**batch_inputs)
    sentences = [
        naive_sentence(p.tolist(), o.tolist())
        for p, o in zip(batch_inputs["view_percent"], batch_inputs["clause_order"])
    ]
    expected = clip.tokenizer(sentences)
    expected_eot = expected.argmax(-1)
    assert torch.equal(batch.eot_indices, expected_eot)
    length = batch.token_ids.shape[1]
    assert length == int(expected_eot.max()) + 1  # padded to the batch's longest only
    assert torch.equal(batch.token_ids, expected[:, :length])
    assert len(set(batch.eot_indices.tolist())) > 1  # lengths really differ per sample
    assert batch.embeddings.shape == (BATCH, length, clip.model.token_embedding.embedding_dim)


def test_digit_view_matches_a_naive_scan(clip, batch_inputs):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    batch = learner(**batch_inputs)
    for row in range(BATCH):
        tokens = batch.token_ids[row].tolist()
        for view in range(4):
            expected = naive_digit_positions(tokens, view, clip.tokenizer)
            got = (batch.digit_view[row] == view).nonzero().flatten().tolist()
            assert got == expected
            percent = int(batch_inputs["view_percent"][row, view])
            assert len(expected) == len(str(percent))


@pytest.mark.parametrize("view", range(4))
def test_view_bias_moves_only_that_views_digit_embeddings(clip, batch_inputs, view):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    with torch.no_grad():
        before = learner(**batch_inputs).embeddings
        learner.view_bias[view] += 1.0
        after = learner(**batch_inputs)
    changed = (after.embeddings - before).abs().sum(-1) > 0  # [B, L]
    for row in range(BATCH):
        expected = naive_digit_positions(after.token_ids[row].tolist(), view, clip.tokenizer)
        assert changed[row].nonzero().flatten().tolist() == expected
        torch.testing.assert_close(
            after.embeddings[row, expected] - before[row, expected],
            torch.ones(len(expected), learner.width),
        )


def test_shuffling_reorders_clauses_but_keeps_their_content(clip, batch_inputs):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    percent = batch_inputs["view_percent"][:1].expand(6, -1)
    orders = torch.tensor(
        [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1], [0, 2, 1, 3], [3, 0, 1, 2]]
    )
    batch = learner(image_features=torch.zeros(6, 64), view_percent=percent, clause_order=orders)
    clause_lists = []
    for row in range(6):
        words = words_of(batch.token_ids[row, 1 : batch.eot_indices[row]], clip.tokenizer)
        body = " ".join(words).split(" of ", 2)[-1]  # text after "... proportions of"
        clauses = [c.strip() for c in body.rstrip(" .").split(",")]
        assert [c.split()[0] for c in clauses] == [VIEW_NAMES[v] for v in orders[row].tolist()]
        clause_lists.append(clauses)
    assert len({tuple(c) for c in clause_lists}) == 6
    assert len({tuple(sorted(c)) for c in clause_lists}) == 1
    assert len(set(batch.eot_indices.tolist())) == 1  # same tokens, only reordered


def test_clause_orders_are_seeded_per_epoch_permutations():
    first = clause_orders(500, epoch=4, seed=11)
    assert first.shape == (500, 4) and first.dtype == torch.long
    assert torch.equal(first.sort(dim=1).values, torch.arange(4).expand(500, -1))
    assert torch.equal(first, clause_orders(500, epoch=4, seed=11))
    assert not torch.equal(first, clause_orders(500, epoch=5, seed=11))
    assert not torch.equal(first, clause_orders(500, epoch=4, seed=12))
    assert len({tuple(row) for row in first.tolist()}) == 24  # all orders occur


def test_view_parameters_and_clauses_belong_to_the_viewcoop_variants_only(clip, batch_inputs):
    for variant in PROMPT_VARIANTS:
        learner = build_prompt_learner(variant, clip.model, clip.tokenizer)
        names = [name for name, _ in learner.named_parameters()]
        assert any("view" in name for name in names) == (variant == "viewcoop"), names
        batch = learner(**batch_inputs)
        words = set(words_of(batch.token_ids[0], clip.tokenizer))
        has_clauses = variant.startswith("viewcoop")
        assert bool(words & VIEW_WORDS) == has_clauses
        assert bool((batch.digit_view >= 0).any()) == has_clauses
        if not has_clauses:
            prefix = clip.tokenizer(["A photo of a X X X X vehicle."])[0]
            if variant == "uncoop":
                prefix = clip.tokenizer(["A photo of a X X X X X vehicle."])[0]
            length = batch.token_ids.shape[1]
            assert torch.equal(batch.token_ids, prefix[:length].expand(BATCH, -1))


def test_frozen_positions_hold_clip_token_embeddings(clip, batch_inputs):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    batch = learner(**batch_inputs)
    with torch.no_grad():
        reference = clip.model.token_embedding(batch.token_ids)
    learned = torch.zeros_like(batch.token_ids, dtype=torch.bool)
    learned.scatter_(1, batch.ctx_positions, True)
    assert batch.ctx_positions[0].tolist() == [5, 6, 7, 8]
    fixed = ~learned  # view_bias is zero-initialised, so digits still equal the vocabulary
    torch.testing.assert_close(batch.embeddings[fixed], reference[fixed], rtol=0, atol=0)
    assert not torch.allclose(batch.embeddings[learned], reference[learned])


@pytest.mark.parametrize("variant", ["cocoop", "viewcoop_static", "viewcoop"])
def test_placeholder_context_reproduces_encode_text(clip, batch_inputs, variant):
    """With X set to the word "x" and f_theta silenced, the prompt is the plain sentence."""
    learner = build_prompt_learner(variant, clip.model, clip.tokenizer)
    x_id = clip.tokenizer.encode("X")[0]
    with torch.no_grad():
        learner.ctx.copy_(clip.model.token_embedding.weight[x_id].expand(4, -1))
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
        ours = encode_prompts(clip.model, learner, **batch_inputs)
        if variant == "cocoop":
            sentences = ["A photo of a X X X X vehicle."] * BATCH
        else:
            sentences = [
                naive_sentence(p.tolist(), o.tolist())
                for p, o in zip(batch_inputs["view_percent"], batch_inputs["clause_order"])
            ]
        expected = clip.model.encode_text(clip.tokenizer(sentences))
    assert (ours - expected).abs().max() <= 1e-5


def test_coop_contexts_follow_pseudo_identities(clip, batch_inputs):
    learner = build_prompt_learner("coop", clip.model, clip.tokenizer, seed=1)
    features = batch_inputs["image_features"][:4]
    with torch.no_grad():
        shared = encode_prompts(clip.model, learner, image_features=features)
        assert torch.allclose(shared, shared[:1].expand(4, -1))  # one prompt before clustering
        learner.on_clusters_changed(3)
        assert learner.cluster_ctx.shape == (3, 4, learner.width)
        per_cluster = encode_prompts(clip.model, learner, cluster_ids=torch.tensor([0, 1, 2, -1]))
    distances = torch.cdist(per_cluster, per_cluster)
    assert (distances[~torch.eye(4, dtype=torch.bool)] > 1e-4).all()
    torch.testing.assert_close(per_cluster[3], shared[0])  # outliers keep the shared context

    twin = build_prompt_learner("coop", clip.model, clip.tokenizer, seed=1)
    twin.on_clusters_changed(3)
    torch.testing.assert_close(twin.cluster_ctx, learner.cluster_ctx)  # same on every rank

    learner.on_clusters_changed(5)
    assert learner.cluster_ctx.shape == (5, 4, learner.width)
    assert learner.per_cluster_parameters()[0] is learner.cluster_ctx
    with pytest.raises(ValueError, match="on_clusters_changed"):
        learner(cluster_ids=torch.tensor([5]))


def test_uncoop_class_word_is_frozen_random_per_cluster(clip):
    learner = build_prompt_learner("uncoop", clip.model, clip.tokenizer)
    ids = torch.tensor([0, 1, -1])
    with torch.no_grad():
        plain = encode_prompts(clip.model, learner, cluster_ids=torch.tensor([-1]))
        learner.on_clusters_changed(2)
        first = encode_prompts(clip.model, learner, cluster_ids=ids)
        learner.on_clusters_changed(2)
        second = encode_prompts(clip.model, learner, cluster_ids=ids)
    assert not torch.allclose(first[0], first[1], atol=1e-4)
    torch.testing.assert_close(first[2], plain[0])
    assert not torch.allclose(first[0], second[0], atol=1e-4)  # regenerated per clustering
    assert "class_embeddings" not in dict(learner.named_parameters())
    assert [name for name, _ in learner.named_parameters()] == ["ctx"]


def test_meta_net_sees_a_detached_image_feature(clip, batch_inputs):
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    image_features = batch_inputs["image_features"].clone().requires_grad_(True)
    inputs = {**batch_inputs, "image_features": image_features}
    encode_prompts(clip.model, learner, **inputs).square().sum().backward()
    assert image_features.grad is None
    assert learner.meta_net.linear1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", PROMPT_VARIANTS)
def test_every_variant_trains_end_to_end(clip, batch_inputs, variant):
    model = clip.model
    model.zero_grad(set_to_none=True)
    learner = build_prompt_learner(variant, model, clip.tokenizer)
    learner.on_clusters_changed(4)
    cluster_ids = torch.arange(BATCH) % 5 - 1  # includes outliers
    features = encode_prompts(model, learner, cluster_ids=cluster_ids, **batch_inputs)
    assert features.shape == (BATCH, 64)
    features.square().sum().backward()
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    assert model.token_embedding.weight.grad is None  # the vocabulary is not trained
    assert model.visual.conv1.weight.grad is None


def test_bad_inputs_are_rejected_with_the_field_name(clip, batch_inputs):
    with pytest.raises(ValueError, match="coop.*viewcoop_static.*viewcoop"):
        build_prompt_learner("viewcoop_dynamic", clip.model, clip.tokenizer)
    learner = build_prompt_learner("viewcoop", clip.model, clip.tokenizer)
    too_large = batch_inputs["view_percent"].clone()
    too_large[0, 0] = 101
    with pytest.raises(ValueError, match="view_percent"):
        learner(**{**batch_inputs, "view_percent": too_large})
    repeated = batch_inputs["clause_order"].clone()
    repeated[0] = torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match="permutation"):
        learner(**{**batch_inputs, "clause_order": repeated})
    with pytest.raises(ValueError, match="image_features"):
        learner(view_percent=batch_inputs["view_percent"])
    with pytest.raises(ValueError, match="batch size"):
        learner(**{**batch_inputs, "image_features": batch_inputs["image_features"][:3]})


@pytest.mark.parametrize("variant", ["coop", "uncoop"])
def test_per_cluster_state_survives_a_checkpoint(clip, variant):
    learner = build_prompt_learner(variant, clip.model, clip.tokenizer, seed=4)
    learner.on_clusters_changed(3)
    state = learner.state_dict()
    restored = build_prompt_learner(variant, clip.model, clip.tokenizer, seed=99)
    restored.on_clusters_changed(3)  # size the per-cluster rows first, then load
    restored.load_state_dict(state)
    ids = torch.tensor([2, 0, -1])
    with torch.no_grad():
        expected = encode_prompts(clip.model, learner, cluster_ids=ids)
        got = encode_prompts(clip.model, restored, cluster_ids=ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
