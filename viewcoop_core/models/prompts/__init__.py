"""Prompt learners: the five textual prompts compared in the paper's Table 2.

Every learner turns a batch of per-sample inputs into embedded sentences for CLIP's text
tower (``PromptBatch``); ``encode_prompts`` then runs the tower once for the whole batch.

=================  =========================================================  ==================
variant            sentence (X = learnable context slot)                       conditioned on
=================  =========================================================  ==================
``coop``           "A photo of a X X X X vehicle."                             pseudo-identity
``cocoop``         "A photo of a X X X X vehicle."                             image (meta-net)
``uncoop``         "A photo of a X X X X [C] vehicle."                         pseudo-identity
``viewcoop_static`` "A photo of a X X X X vehicle with the proportions of       image + view ratios
                   front view is R1 percent, back view is R2 percent,
                   side view is R3 percent, top view is R4 percent."
``viewcoop``       as ``viewcoop_static`` plus a learnable bias per view        image + view ratios
                   on that view's ratio digits (paper Eq. 1)
=================  =========================================================  ==================

``base.py`` holds what they share, ``coop.py`` the CoOp family, ``viewcoop.py`` the
paper's prompt (Eq. 1, Eq. 2).
"""

from __future__ import annotations

from torch import Tensor, nn

from viewcoop_core.models.clip import encode_text_embeddings
from viewcoop_core.models.prompts.base import PromptBatch, PromptLearner, joint_embed_dim
from viewcoop_core.models.prompts.coop import (
    CoCoOpPromptLearner,
    CoOpPromptLearner,
    UnCoOpPromptLearner,
)
from viewcoop_core.models.prompts.viewcoop import (
    ViewCoOpPromptLearner,
    clause_orders,
    viewcoop_sentence,
)
from viewcoop_core.vocabulary import PROMPT_VARIANTS

__all__ = [
    "PromptBatch",
    "PromptLearner",
    "build_prompt_learner",
    "clause_orders",
    "encode_prompts",
    "viewcoop_sentence",
]


def build_prompt_learner(
    variant: str,
    clip_model: nn.Module,
    tokenizer,
    num_ctx: int = 4,
    seed: int = 0,
    meta_net_reduction: int = 16,
) -> PromptLearner:
    """The prompt learner called ``variant`` (one of ``PROMPT_VARIANTS``) for ``clip_model``.

    ``tokenizer`` is open_clip's ``SimpleTokenizer`` (``ClipBundle.tokenizer``); ``seed``
    fixes every random initialisation, so all data-parallel ranks build identical
    learners without a broadcast. ``meta_net_reduction``: the image-conditioned variants'
    meta-net is width -> width // reduction -> width (CoCoOp: 16).
    """
    if variant not in PROMPT_VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}; choose one of {PROMPT_VARIANTS}")
    common = {
        "token_embedding": clip_model.token_embedding,
        "tokenizer": tokenizer,
        "num_ctx": num_ctx,
        "seed": seed,
    }
    if variant == "coop":
        return CoOpPromptLearner(**common)
    if variant == "uncoop":
        return UnCoOpPromptLearner(**common)
    feature_dim = joint_embed_dim(clip_model)
    if variant == "cocoop":
        return CoCoOpPromptLearner(**common, feature_dim=feature_dim, reduction=meta_net_reduction)
    return ViewCoOpPromptLearner(
        **common,
        feature_dim=feature_dim,
        dynamic=variant == "viewcoop",
        reduction=meta_net_reduction,
    )


def encode_prompts(
    clip_model: nn.Module,
    learner: PromptLearner,
    image_features: Tensor | None = None,
    view_percent: Tensor | None = None,
    cluster_ids: Tensor | None = None,
    clause_order: Tensor | None = None,
) -> Tensor:
    """Text features [B, D] (not normalised) of the learner's prompts: one text-tower pass."""
    batch = learner(
        image_features=image_features,
        view_percent=view_percent,
        cluster_ids=cluster_ids,
        clause_order=clause_order,
    )
    return encode_text_embeddings(clip_model, batch.embeddings, batch.eot_indices)
