"""The CoOp family of Table 2: CoOp (per pseudo-identity context, CLIP-ReID style),
CoCoOp (image-conditioned context) and UnCoOp (a per pseudo-identity class word).

"A photo of a X1..XM vehicle." with X the learnable context. CoOp and UnCoOp hold rows
per pseudo-identity, redrawn at every re-clustering (``PerClusterPromptLearner``).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from viewcoop_core.models.prompts.base import (
    CTX_INIT_STD,
    PLACEHOLDER_WORD,
    SENTENCE_LEAD,
    MetaNet,
    PromptLearner,
    TokenLayout,
    conditional_context,
    splice,
)

logger = logging.getLogger(__name__)


class PerClusterPromptLearner(PromptLearner):
    """A learner with one row per pseudo-identity (``cluster_rows``), redrawn at every
    re-clustering since pseudo-identities are renumbered.

    Subclasses say what a row is (``_draw_cluster_rows``); the generation counter seeds
    each redraw, so every rank draws the same rows without a broadcast. A checkpoint
    restores them by ``on_clusters_changed(C)`` then ``load_state_dict``.
    """

    uses_cluster_ids = True
    _rows_name: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._generation = 0

    @property
    def cluster_rows(self) -> Tensor:
        return getattr(self, self._rows_name)

    @property
    def num_clusters(self) -> int:
        return self.cluster_rows.shape[0]

    def on_clusters_changed(self, num_clusters: int) -> None:
        if num_clusters < 0:
            raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
        self._generation += 1
        setattr(self, self._rows_name, self._draw_cluster_rows(num_clusters, self._generation))
        logger.debug(
            "%s: %d pseudo-identity rows (generation %d)",
            self.variant,
            num_clusters,
            self._generation,
        )

    def _draw_cluster_rows(self, num_clusters: int, generation: int) -> Tensor:
        """The rows of ``num_clusters`` pseudo-identities (a Parameter or a buffer)."""
        raise NotImplementedError

    def _cluster_ids_or_none(self, cluster_ids: Tensor | None) -> Tensor | None:
        """Checked ids, or None when there is nothing per-cluster to apply."""
        if cluster_ids is None:
            return None
        cluster_ids = self._checked_cluster_ids(cluster_ids, self.num_clusters)
        return None if self.num_clusters == 0 else cluster_ids


class CoOpPromptLearner(PerClusterPromptLearner):
    """CoOp with pseudo-identity context, CLIP-ReID style.

    "A photo of a X1..XM vehicle." with X = shared context + the context of the sample's
    pseudo-identity ([C, M, W], re-initialised N(0, 0.02) at every re-clustering, since
    pseudo-identities are renumbered). Outliers (-1), or calls without ``cluster_ids``,
    get the shared context alone. Additive rather than replacing, so what the shared
    part learns survives re-clustering.
    """

    variant = "coop"
    _rows_name = "cluster_ctx"

    def __init__(self, token_embedding: nn.Embedding, tokenizer, num_ctx: int = 4, seed: int = 0):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=fixed_sentence(num_ctx),
            num_slots=num_ctx,
        )
        self.cluster_ctx = nn.Parameter(torch.zeros(0, num_ctx, self.width, device=self._device))

    def _draw_cluster_rows(self, num_clusters: int, generation: int) -> Tensor:
        shape = (num_clusters, self.num_ctx, self.width)
        return nn.Parameter(self._normal(shape, "cluster_ctx", CTX_INIT_STD, generation))

    def per_cluster_parameters(self) -> list[nn.Parameter]:
        return [self.cluster_ctx]

    def _token_layout(self, batch_size, view_percent, clause_order) -> TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        ctx = self._shared_context(batch_size)
        cluster_ids = self._cluster_ids_or_none(cluster_ids)
        if cluster_ids is None:
            return ctx
        specific = self.cluster_ctx[cluster_ids.clamp(min=0)]
        return ctx + specific * (cluster_ids >= 0).to(specific.dtype)[:, None, None]


class CoCoOpPromptLearner(PromptLearner):
    """CoCoOp: "A photo of a X1..XM vehicle." with X_m(I) = X_m + f_theta(I)."""

    variant = "cocoop"
    uses_image_features = True

    def __init__(
        self,
        token_embedding: nn.Embedding,
        tokenizer,
        feature_dim: int,
        num_ctx: int = 4,
        seed: int = 0,
        reduction: int = 16,
    ):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=fixed_sentence(num_ctx),
            num_slots=num_ctx,
        )
        self.meta_net = MetaNet(feature_dim, self.width, self._generator("meta_net"), reduction).to(
            self._device
        )

    def _token_layout(self, batch_size, view_percent, clause_order) -> TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return conditional_context(self.ctx, self.meta_net, image_features)


class UnCoOpPromptLearner(PerClusterPromptLearner):
    """UPL-style unsupervised prompt: "A photo of a X1..XM [C] vehicle."

    X is shared and unconditioned; [C] stands for the pseudo-identity's class word.
    Pseudo-identities have no names, so each gets a frozen random word embedding (scaled
    like CLIP's vocabulary), redrawn at every re-clustering; outliers and calls without
    ``cluster_ids`` keep the placeholder word's embedding. Only the pseudo-label losses
    train it: there is no image conditioning.
    """

    variant = "uncoop"
    _rows_name = "class_embeddings"

    def __init__(self, token_embedding: nn.Embedding, tokenizer, num_ctx: int = 4, seed: int = 0):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=fixed_sentence(num_ctx + 1),
            num_slots=num_ctx + 1,
        )
        self.class_position = self.ctx_start + num_ctx
        self.word_std = float(token_embedding.weight.detach().std())
        # Persistent so a checkpoint restores the exact words: call on_clusters_changed(C)
        # first, then load_state_dict (as for CoOp's per-cluster context).
        self.register_buffer("class_embeddings", torch.zeros(0, self.width, device=self._device))

    def _draw_cluster_rows(self, num_clusters: int, generation: int) -> Tensor:
        return self._normal((num_clusters, self.width), "class_words", self.word_std, generation)

    def _token_layout(self, batch_size, view_percent, clause_order) -> TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return self._shared_context(batch_size)

    def _finish(
        self, embeddings: Tensor, layout: TokenLayout, cluster_ids: Tensor | None
    ) -> Tensor:
        cluster_ids = self._cluster_ids_or_none(cluster_ids)
        if cluster_ids is None:
            return embeddings
        placeholder = embeddings[:, self.class_position]
        words = self.class_embeddings[cluster_ids.clamp(min=0)].to(placeholder.dtype)
        words = torch.where((cluster_ids >= 0)[:, None], words, placeholder)
        return splice(embeddings, self.class_position, words[:, None])


def fixed_sentence(num_slots: int) -> str:
    return f"{SENTENCE_LEAD} {' '.join([PLACEHOLDER_WORD] * num_slots)} vehicle."
