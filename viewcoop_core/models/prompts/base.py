"""The machinery every prompt learner shares: embedded prompt batches, the frozen
vocabulary rows, CoCoOp's meta-net f_theta and the ``PromptLearner`` base class.

Every learner turns a batch of per-sample inputs into embedded sentences for CLIP's text
tower (``PromptBatch``); ``encode_prompts`` (``prompts/__init__.py``) then runs the tower
once for the whole batch. The sentence is never re-tokenised on the hot path: each
learner tokenises its fixed pieces once at construction and per batch only assembles
token ids. Token embeddings come from a frozen copy of the CLIP vocabulary rows the
template uses: the paper fine-tunes the text transformer, not the vocabulary, so the
learner does not hold (or train) CLIP's 49,408-row table.
"""

from __future__ import annotations

import logging
import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.vocabulary import needs_view_ratios

logger = logging.getLogger(__name__)

MAX_PERCENT = 100
CTX_INIT_STD = 0.02
PLACEHOLDER_WORD = "X"
SENTENCE_LEAD = "A photo of a"
VIEWCOOP_BRIDGE = "vehicle with the proportions of"


@dataclass
class PromptBatch:
    """Embedded prompts for one batch of B samples, padded to the batch's longest, L.

    Attributes:
        embeddings: float [B, L, W] token embeddings with the learned vectors in place.
        eot_indices: long [B], position of each row's end-of-text token.
        token_ids: long [B, L], CLIP token ids of the sentence as text, with the word "X"
            at learnable slots (what the tokenizer returns for that sentence, truncated to L).
        ctx_positions: long [B, M], positions of the M learnable context vectors.
        digit_view: long [B, L], view index (0..3, order of ``VIEW_NAMES``) at the digit
            tokens of that view's ratio, -1 everywhere else.
    """

    embeddings: Tensor
    eot_indices: Tensor
    token_ids: Tensor
    ctx_positions: Tensor
    digit_view: Tensor


@dataclass
class TokenLayout:
    token_ids: Tensor  # long [B, L]
    eot_indices: Tensor  # long [B]
    digit_view: Tensor  # long [B, L]


def joint_embed_dim(clip_model: nn.Module) -> int:
    """D, the width of CLIP's joint image/text space (the text projection's output)."""
    projection = clip_model.text_projection
    if isinstance(projection, nn.Linear):
        return projection.out_features
    return int(projection.shape[-1])


class FrozenTokenTable(nn.Module):
    """Frozen copy of the CLIP token-embedding rows for the few ids a template uses."""

    def __init__(self, token_embedding: nn.Embedding, token_ids: Iterable[int]):
        super().__init__()
        weight = token_embedding.weight.detach()
        ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long, device=weight.device)
        self.register_buffer("token_ids", ids)
        self.register_buffer("rows", weight[ids].clone())

    def forward(self, token_ids: Tensor) -> Tensor:
        """long [...] CLIP ids (all among the table's) -> float [..., W] embeddings."""
        return self.rows[torch.searchsorted(self.token_ids, token_ids.contiguous())]


class MetaNet(nn.Module):
    """CoCoOp's f_theta: image feature [B, D] -> context bias [B, W].

    Linear(D, D // reduction) -> ReLU -> Linear(D // reduction, W). The input is detached
    and L2-normalised inside: the text losses must train f_theta without pushing gradient
    into the image encoder (which gets its own losses), and CoCoOp feeds unit features.
    """

    def __init__(
        self, feature_dim: int, width: int, generator: torch.Generator, reduction: int = 16
    ):
        super().__init__()
        hidden = max(feature_dim // reduction, 1)
        self.linear1 = nn.Linear(feature_dim, hidden)
        self.linear2 = nn.Linear(hidden, width)
        for layer in (self.linear1, self.linear2):
            # nn.Linear's own initialisation, drawn from the learner's seeded generator.
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, image_features: Tensor) -> Tensor:
        features = F.normalize(image_features.detach().to(self.linear1.weight.dtype), dim=-1)
        return self.linear2(F.relu(self.linear1(features)))


class PromptLearner(nn.Module, ABC):
    """Shared machinery: sentence lead with the context slots, frozen vocabulary, forward.

    Subclasses define the token layout (which sentence each sample gets), the M context
    vectors per sample, and any final edit of the embeddings (class token, view bias).

    Every subclass accepts the same keyword inputs; those a variant does not use are only
    read for the batch size, so callers may pass everything they have to every variant.
    """

    variant: str = ""
    uses_image_features: bool = False
    uses_cluster_ids: bool = False

    @property
    def uses_view_percent(self) -> bool:
        """Whether this variant states the view proportions (``vocabulary.needs_view_ratios``)."""
        return needs_view_ratios(self.variant)

    def __init__(
        self,
        token_embedding: nn.Embedding,
        tokenizer,
        num_ctx: int,
        seed: int,
        lead_text: str,
        num_slots: int,
        extra_texts: Sequence[str] = (),
    ):
        """``lead_text`` starts every sentence and holds ``num_slots`` consecutive
        placeholder words (the first ``num_ctx`` of them are the learnable context);
        ``extra_texts`` are the other pieces a variant assembles sentences from."""
        super().__init__()
        if num_ctx < 1:
            raise ValueError(f"num_ctx must be >= 1, got {num_ctx}")
        require_bpe_tokenizer(tokenizer)
        self.num_ctx = num_ctx
        self.seed = seed
        self.width = token_embedding.embedding_dim
        self.context_length = int(tokenizer.context_length)
        self.sot_id = int(tokenizer.sot_token_id)
        self.eot_id = int(tokenizer.eot_token_id)
        self.pad_id = 0  # open_clip's tokenizer pads with id 0

        self.placeholder_id = single_token(tokenizer, PLACEHOLDER_WORD)
        lead = [self.sot_id, *tokenizer.encode(lead_text)]
        self.ctx_start = slot_start(lead, self.placeholder_id, num_slots, lead_text)
        self.register_buffer("lead_ids", torch.tensor(lead, dtype=torch.long), persistent=False)

        vocabulary = set(lead) | {self.eot_id, self.pad_id}
        for text in extra_texts:
            vocabulary.update(tokenizer.encode(text))
        self.token_table = FrozenTokenTable(token_embedding, vocabulary)

        self.ctx = nn.Parameter(self._normal((num_ctx, self.width), "ctx", std=CTX_INIT_STD))

    # -- what subclasses define ---------------------------------------------------------
    @abstractmethod
    def _token_layout(
        self, batch_size: int, view_percent: Tensor | None, clause_order: Tensor | None
    ) -> TokenLayout:
        """Token ids [B, L], EOT positions [B] and digit views [B, L] of the batch."""

    @abstractmethod
    def _context_vectors(
        self, batch_size: int, image_features: Tensor | None, cluster_ids: Tensor | None
    ) -> Tensor:
        """float [B, M, W]: the learnable context of each sample."""

    def _finish(
        self, embeddings: Tensor, layout: TokenLayout, cluster_ids: Tensor | None
    ) -> Tensor:
        """Last edit of the embedded batch [B, L, W]; identity unless overridden."""
        return embeddings

    # -- public interface ---------------------------------------------------------------
    def forward(
        self,
        image_features: Tensor | None = None,
        view_percent: Tensor | None = None,
        cluster_ids: Tensor | None = None,
        clause_order: Tensor | None = None,
    ) -> PromptBatch:
        """Embedded prompts for a batch: E(T_n) of Eq. 2 for the ViewCoOp variants.

        Args:
            image_features: float [B, D] image features (detached inside); required by
                ``cocoop``, ``viewcoop_static`` and ``viewcoop``.
            view_percent: int [B, 4] whole percents 0..100 per view (order of
                ``VIEW_NAMES``); required by the ViewCoOp variants.
            cluster_ids: long [B] pseudo-identities of this epoch, -1 for outliers or
                when no clustering exists; used by ``coop`` and ``uncoop``.
            clause_order: long [B, 4] per-sample permutation of the view clauses (see
                ``clause_orders``); ``None`` = front, back, side, top.
        """
        batch_size = batch_size_of(
            image_features=image_features,
            view_percent=view_percent,
            cluster_ids=cluster_ids,
            clause_order=clause_order,
        )
        if self.uses_image_features and image_features is None:
            raise ValueError(f"prompt variant {self.variant!r} needs image_features [B, D]")
        if self.uses_view_percent and view_percent is None:
            raise ValueError(f"prompt variant {self.variant!r} needs view_percent [B, 4]")
        layout = self._token_layout(batch_size, view_percent, clause_order)
        ctx = self._context_vectors(batch_size, image_features, cluster_ids)
        embeddings = splice(self.token_table(layout.token_ids), self.ctx_start, ctx)
        embeddings = self._finish(embeddings, layout, cluster_ids)
        ctx_positions = torch.arange(
            self.ctx_start, self.ctx_start + self.num_ctx, device=embeddings.device
        ).expand(batch_size, -1)
        return PromptBatch(
            embeddings=embeddings,
            eot_indices=layout.eot_indices,
            token_ids=layout.token_ids,
            ctx_positions=ctx_positions,
            digit_view=layout.digit_view,
        )

    def on_clusters_changed(self, num_clusters: int) -> None:
        """Hook called after each re-clustering with the number of pseudo-identities."""

    def per_cluster_parameters(self) -> list[nn.Parameter]:
        """Parameters re-created by ``on_clusters_changed``: the optimizer (and a DDP
        wrapper) must be rebuilt for them after every call. Empty for most variants."""
        return []

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, num_ctx={self.num_ctx}, width={self.width}"

    # -- helpers ------------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return self.lead_ids.device

    def _generator(self, *keys: int | str) -> torch.Generator:
        """CPU generator seeded from (seed, *keys): identical on every rank and process."""
        words = [self.seed, *(zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys)]
        seed = int(np.random.SeedSequence(words).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def _normal(self, shape: tuple[int, ...], key: str, std: float, generation: int = 0) -> Tensor:
        values = torch.randn(shape, generator=self._generator(key, generation)) * std
        return values.to(device=self._device, dtype=self.token_table.rows.dtype)

    def _fixed_layout(self, batch_size: int) -> TokenLayout:
        """Every row is the lead sentence followed by EOT."""
        eot = torch.tensor([self.eot_id], dtype=torch.long, device=self._device)
        ids = torch.cat([self.lead_ids, eot]).expand(batch_size, -1)
        length = ids.shape[1]
        return TokenLayout(
            token_ids=ids,
            eot_indices=torch.full(
                (batch_size,), length - 1, dtype=torch.long, device=self._device
            ),
            digit_view=torch.full((batch_size, length), -1, dtype=torch.long, device=self._device),
        )

    def _shared_context(self, batch_size: int) -> Tensor:
        return self.ctx.unsqueeze(0).expand(batch_size, -1, -1)

    def _checked_cluster_ids(self, cluster_ids: Tensor, num_clusters: int) -> Tensor:
        cluster_ids = cluster_ids.to(device=self._device, dtype=torch.long)
        if cluster_ids.ndim != 1:
            raise ValueError(f"cluster_ids must be [B], got shape {tuple(cluster_ids.shape)}")
        if cluster_ids.numel() and (
            int(cluster_ids.min()) < -1 or int(cluster_ids.max()) >= num_clusters
        ):
            raise ValueError(
                f"cluster_ids must lie in [-1, {num_clusters}) (-1 = outlier); got "
                f"[{int(cluster_ids.min())}, {int(cluster_ids.max())}]. Call "
                "on_clusters_changed(num_clusters) after each clustering."
            )
        return cluster_ids


def conditional_context(ctx: Tensor, meta_net: MetaNet, image_features: Tensor) -> Tensor:
    """X_m(I_n) = X_m + f_theta(I_n) (the context of Eq. 2): [M, W] + [B, 1, W] -> [B, M, W]."""
    bias = meta_net(image_features.to(ctx.device))
    return ctx.unsqueeze(0) + bias.unsqueeze(1).to(ctx.dtype)


def splice(embeddings: Tensor, start: int, values: Tensor) -> Tensor:
    """embeddings [B, L, W] with positions start..start+K replaced by values [B, K, W]."""
    stop = start + values.shape[1]
    return torch.cat(
        [embeddings[:, :start], values.to(embeddings.dtype), embeddings[:, stop:]], dim=1
    )


def batch_size_of(**inputs: Tensor | None) -> int:
    sizes = {name: int(t.shape[0]) for name, t in inputs.items() if t is not None}
    if not sizes:
        raise ValueError(
            f"pass at least one of {', '.join(inputs)}: the batch size is read from them"
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def require_bpe_tokenizer(tokenizer) -> None:
    needed = ("encode", "sot_token_id", "eot_token_id", "context_length")
    missing = [name for name in needed if not hasattr(tokenizer, name)]
    if missing:
        raise TypeError(
            f"prompt learners need open_clip's SimpleTokenizer (CLIP BPE); "
            f"{type(tokenizer).__name__} lacks {missing}"
        )


def single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise RuntimeError(f"expected {text!r} to be one CLIP token, the tokenizer gives {ids}")
    return ids[0]


def slot_start(lead: list[int], placeholder_id: int, num_slots: int, lead_text: str) -> int:
    positions = [i for i, token in enumerate(lead) if token == placeholder_id]
    start = positions[0] if positions else -1
    if positions != list(range(start, start + num_slots)):
        raise RuntimeError(
            f"expected {num_slots} consecutive placeholder tokens in {lead_text!r}, "
            f"found them at {positions}"
        )
    return start
