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

The sentence is never re-tokenised on the hot path. Each learner tokenises its fixed
pieces once at construction (and checks that gluing the pieces reproduces the tokenizer's
output for a whole sentence); per batch it only assembles token ids, which for ViewCoOp is
a vectorised gather from a (view, percent) -> clause table. Token embeddings come from a
frozen copy of the CLIP vocabulary rows the template uses: the paper fine-tunes the text
transformer, not the vocabulary, so the learner does not hold (or train) CLIP's 49,408-row
table.
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

from viewcoop_core.models.clip import encode_text_embeddings

logger = logging.getLogger(__name__)

PROMPT_VARIANTS = ("coop", "cocoop", "uncoop", "viewcoop_static", "viewcoop")
VIEW_NAMES = ("front", "back", "side", "top")
"""Order of the four views everywhere in this module: ``view_percent[:, j]``,
``clause_order`` entries and ``view_bias[j]`` all index this tuple."""
NUM_VIEWS = len(VIEW_NAMES)
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
class _TokenLayout:
    token_ids: Tensor  # long [B, L]
    eot_indices: Tensor  # long [B]
    digit_view: Tensor  # long [B, L]


def build_prompt_learner(
    variant: str,
    clip_model: nn.Module,
    tokenizer,
    num_ctx: int = 4,
    seed: int = 0,
) -> PromptLearner:
    """The prompt learner called ``variant`` (one of ``PROMPT_VARIANTS``) for ``clip_model``.

    ``tokenizer`` is open_clip's ``SimpleTokenizer`` (``ClipBundle.tokenizer``); ``seed``
    fixes every random initialisation, so all data-parallel ranks build identical
    learners without a broadcast.
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
        return CoCoOpPromptLearner(**common, feature_dim=feature_dim)
    return ViewCoOpPromptLearner(**common, feature_dim=feature_dim, dynamic=variant == "viewcoop")


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


def clause_orders(num_samples: int, epoch: int, seed: int) -> Tensor:
    """Per-sample order of the four view clauses for one epoch: long [N, 4].

    Row n is a permutation of 0..3 (indices into ``VIEW_NAMES``), a pure function of
    (seed, epoch, n-th row of one draw), so every worker agrees on sample n's order when
    it indexes the result by the global sample index.
    """
    if num_samples < 0 or epoch < 0 or seed < 0:
        raise ValueError(
            f"num_samples, epoch and seed must be >= 0, got {num_samples}, {epoch}, {seed}"
        )
    rng = np.random.default_rng([seed, epoch])
    orders = rng.permuted(np.tile(np.arange(NUM_VIEWS), (num_samples, 1)), axis=1)
    return torch.from_numpy(orders).long()


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
    uses_view_percent: bool = False
    uses_cluster_ids: bool = False

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
        _require_bpe_tokenizer(tokenizer)
        self.num_ctx = num_ctx
        self.seed = seed
        self.width = token_embedding.embedding_dim
        self.context_length = int(tokenizer.context_length)
        self.sot_id = int(tokenizer.sot_token_id)
        self.eot_id = int(tokenizer.eot_token_id)
        self.pad_id = 0  # open_clip's tokenizer pads with id 0

        self.placeholder_id = _single_token(tokenizer, PLACEHOLDER_WORD)
        lead = [self.sot_id, *tokenizer.encode(lead_text)]
        self.ctx_start = _slot_start(lead, self.placeholder_id, num_slots, lead_text)
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
    ) -> _TokenLayout:
        """Token ids [B, L], EOT positions [B] and digit views [B, L] of the batch."""

    @abstractmethod
    def _context_vectors(
        self, batch_size: int, image_features: Tensor | None, cluster_ids: Tensor | None
    ) -> Tensor:
        """float [B, M, W]: the learnable context of each sample."""

    def _finish(
        self, embeddings: Tensor, layout: _TokenLayout, cluster_ids: Tensor | None
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
        """Embedded prompts for a batch.

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
        batch_size = _batch_size(
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
        embeddings = _splice(self.token_table(layout.token_ids), self.ctx_start, ctx)
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

    def _fixed_layout(self, batch_size: int) -> _TokenLayout:
        """Every row is the lead sentence followed by EOT."""
        eot = torch.tensor([self.eot_id], dtype=torch.long, device=self._device)
        ids = torch.cat([self.lead_ids, eot]).expand(batch_size, -1)
        length = ids.shape[1]
        return _TokenLayout(
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


class CoOpPromptLearner(PromptLearner):
    """CoOp with pseudo-identity context, CLIP-ReID style.

    "A photo of a X1..XM vehicle." with X = shared context + the context of the sample's
    pseudo-identity ([C, M, W], re-initialised N(0, 0.02) at every re-clustering, since
    pseudo-identities are renumbered). Outliers (-1), or calls without ``cluster_ids``,
    get the shared context alone. Additive rather than replacing, so what the shared
    part learns survives re-clustering.
    """

    variant = "coop"
    uses_cluster_ids = True

    def __init__(self, token_embedding: nn.Embedding, tokenizer, num_ctx: int = 4, seed: int = 0):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=_fixed_sentence(num_ctx),
            num_slots=num_ctx,
        )
        self._generation = 0
        self.cluster_ctx = nn.Parameter(torch.zeros(0, num_ctx, self.width, device=self._device))

    @property
    def num_clusters(self) -> int:
        return self.cluster_ctx.shape[0]

    def on_clusters_changed(self, num_clusters: int) -> None:
        if num_clusters < 0:
            raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
        self._generation += 1
        shape = (num_clusters, self.num_ctx, self.width)
        self.cluster_ctx = nn.Parameter(
            self._normal(shape, "cluster_ctx", std=CTX_INIT_STD, generation=self._generation)
        )
        logger.debug(
            "coop: %d pseudo-identity contexts (generation %d)", num_clusters, self._generation
        )

    def per_cluster_parameters(self) -> list[nn.Parameter]:
        return [self.cluster_ctx]

    def _token_layout(self, batch_size, view_percent, clause_order) -> _TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        ctx = self._shared_context(batch_size)
        if cluster_ids is None:
            return ctx
        cluster_ids = self._checked_cluster_ids(cluster_ids, self.num_clusters)
        if self.num_clusters == 0:
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
    ):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=_fixed_sentence(num_ctx),
            num_slots=num_ctx,
        )
        self.meta_net = MetaNet(feature_dim, self.width, self._generator("meta_net")).to(
            self._device
        )

    def _token_layout(self, batch_size, view_percent, clause_order) -> _TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return _conditional_context(self.ctx, self.meta_net, image_features)


class UnCoOpPromptLearner(PromptLearner):
    """UPL-style unsupervised prompt: "A photo of a X1..XM [C] vehicle."

    X is shared and unconditioned; [C] stands for the pseudo-identity's class word.
    Pseudo-identities have no names, so each gets a frozen random word embedding (scaled
    like CLIP's vocabulary), redrawn at every re-clustering; outliers and calls without
    ``cluster_ids`` keep the placeholder word's embedding. Only the pseudo-label losses
    train it: there is no image conditioning.
    """

    variant = "uncoop"
    uses_cluster_ids = True

    def __init__(self, token_embedding: nn.Embedding, tokenizer, num_ctx: int = 4, seed: int = 0):
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=_fixed_sentence(num_ctx + 1),
            num_slots=num_ctx + 1,
        )
        self.class_position = self.ctx_start + num_ctx
        self.word_std = float(token_embedding.weight.detach().std())
        self._generation = 0
        # Persistent so a checkpoint restores the exact words: call on_clusters_changed(C)
        # first, then load_state_dict (as for CoOp's per-cluster context).
        self.register_buffer("class_embeddings", torch.zeros(0, self.width, device=self._device))

    @property
    def num_clusters(self) -> int:
        return self.class_embeddings.shape[0]

    def on_clusters_changed(self, num_clusters: int) -> None:
        if num_clusters < 0:
            raise ValueError(f"num_clusters must be >= 0, got {num_clusters}")
        self._generation += 1
        self.class_embeddings = self._normal(
            (num_clusters, self.width),
            "class_words",
            std=self.word_std,
            generation=self._generation,
        )

    def _token_layout(self, batch_size, view_percent, clause_order) -> _TokenLayout:
        return self._fixed_layout(batch_size)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return self._shared_context(batch_size)

    def _finish(
        self, embeddings: Tensor, layout: _TokenLayout, cluster_ids: Tensor | None
    ) -> Tensor:
        if cluster_ids is None:
            return embeddings
        cluster_ids = self._checked_cluster_ids(cluster_ids, self.num_clusters)
        if self.num_clusters == 0:
            return embeddings
        placeholder = embeddings[:, self.class_position]
        words = self.class_embeddings[cluster_ids.clamp(min=0)].to(placeholder.dtype)
        words = torch.where((cluster_ids >= 0)[:, None], words, placeholder)
        return _splice(embeddings, self.class_position, words[:, None])


class ViewCoOpPromptLearner(PromptLearner):
    """ViewCoOp: CoCoOp context plus the four view-proportion clauses.

    "A photo of a X1..XM vehicle with the proportions of <c1>, <c2>, <c3>, <c4>." where
    each clause is "<view> view is <R> percent" and the clauses follow the per-sample
    ``clause_order``. X_m(I) = X_m + f_theta(I). With ``dynamic`` (the paper's method),
    R(view_j) = E(digits of R_j) + X_view_j: a learnable vector per view added at every
    digit token of that view's ratio (Eq. 1); without it (``viewcoop_static``) there are
    no view parameters at all.
    """

    uses_image_features = True
    uses_view_percent = True

    def __init__(
        self,
        token_embedding: nn.Embedding,
        tokenizer,
        feature_dim: int,
        num_ctx: int = 4,
        seed: int = 0,
        dynamic: bool = True,
    ):
        clause_heads = [f"{view} view is" for view in VIEW_NAMES]
        super().__init__(
            token_embedding,
            tokenizer,
            num_ctx,
            seed,
            lead_text=f"{SENTENCE_LEAD} {' '.join([PLACEHOLDER_WORD] * num_ctx)} {VIEWCOOP_BRIDGE}",
            num_slots=num_ctx,
            extra_texts=[*clause_heads, "percent", ",", ".", *map(str, range(10))],
        )
        self._clause_heads = clause_heads
        self.variant = "viewcoop" if dynamic else "viewcoop_static"
        self.dynamic = dynamic
        self.meta_net = MetaNet(feature_dim, self.width, self._generator("meta_net")).to(
            self._device
        )
        if dynamic:
            # Zero-init: training starts from the static prompt and learns each view's shift.
            self.view_bias = nn.Parameter(torch.zeros(NUM_VIEWS, self.width, device=self._device))
        self.period_id = _single_token(tokenizer, ".")
        self._build_clause_table(tokenizer)
        self._check_assembly_matches_tokenizer(tokenizer)

    def _build_clause_table(self, tokenizer) -> None:
        """Token ids of "<view> view is <R> percent ," for every (view, R in 0..100).

        Rows are flattened to view * 101 + R: one-index row lookups are far faster than
        two-index advanced indexing on the CPU.
        """
        digit_ids = [_single_token(tokenizer, str(d)) for d in range(10)]
        percent_ids = tokenizer.encode("percent")
        comma_ids = tokenizer.encode(",")
        rows, digit_masks = [], []
        for view in range(NUM_VIEWS):
            head = tokenizer.encode(self._clause_heads[view])
            for percent in range(MAX_PERCENT + 1):
                digits = [digit_ids[int(c)] for c in str(percent)]
                rows.append(head + digits + percent_ids + comma_ids)
                digit_masks.append(
                    [False] * len(head) + [True] * len(digits) + [False] * (len(percent_ids) + 1)
                )
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        is_digit = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, (tokens, mask) in enumerate(zip(rows, digit_masks)):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            is_digit[row, : len(mask)] = torch.tensor(mask)
        lengths = torch.tensor([len(tokens) for tokens in rows])
        self.register_buffer("clause_ids", ids.to(self._device), persistent=False)
        self.register_buffer("clause_lengths", lengths.to(self._device), persistent=False)
        self.register_buffer("clause_is_digit", is_digit.to(self._device), persistent=False)
        longest = len(self.lead_ids) + NUM_VIEWS * width + 1
        if longest > self.context_length:
            raise ValueError(
                f"num_ctx={self.num_ctx} makes ViewCoOp prompts up to {longest} tokens, over "
                f"CLIP's context length {self.context_length}"
            )

    def _check_assembly_matches_tokenizer(self, tokenizer) -> None:
        """Gluing pre-tokenised pieces must equal tokenising the sentence (BPE merges
        never cross the word boundaries the pieces are cut at); verify once."""
        view_percent = torch.tensor([[37, 5, 100, 0]], device=self._device)
        order = torch.tensor([[2, 0, 3, 1]], device=self._device)
        layout = self._token_layout(1, view_percent, order)
        sentence = viewcoop_sentence(view_percent[0].tolist(), order[0].tolist(), self.num_ctx)
        expected = tokenizer(sentence)[0, : layout.token_ids.shape[1]]
        if not torch.equal(layout.token_ids[0].cpu(), expected):
            raise RuntimeError(
                "the tokenizer does not split ViewCoOp sentences at word and digit "
                "boundaries as CLIP's BPE does; piecewise assembly would be wrong"
            )

    def _token_layout(self, batch_size, view_percent, clause_order) -> _TokenLayout:
        view_percent = _checked_view_percent(view_percent, batch_size, self._device)
        order = _checked_clause_order(clause_order, batch_size, self._device)
        clause_rows = order * (MAX_PERCENT + 1) + view_percent.gather(1, order)  # [B, 4]
        clause_width = self.clause_ids.shape[-1]
        ids = self.clause_ids[clause_rows].flatten(1)  # [B, 4 * Lc]
        is_digit = self.clause_is_digit[clause_rows]  # [B, 4, Lc]
        views = torch.where(is_digit, order[..., None], -1).flatten(1)
        lengths = self.clause_lengths[clause_rows]  # [B, 4]
        slot = torch.arange(clause_width, device=self._device)
        unused = (slot >= lengths[..., None]).flatten(1)
        # Close the gaps between clauses of different lengths: a stable sort moves the
        # used slots to the front in their original order.
        packing = torch.argsort(unused.to(torch.uint8), dim=1, stable=True)
        body_lengths = lengths.sum(1)  # [B]
        body_width = int(body_lengths.max())
        body_ids = ids.gather(1, packing)[:, :body_width]
        body_views = views.gather(1, packing)[:, :body_width]

        lead_length = len(self.lead_ids)
        token_ids = torch.cat(
            [
                self.lead_ids.expand(batch_size, -1),
                body_ids,
                torch.full((batch_size, 1), self.pad_id, dtype=torch.long, device=self._device),
            ],
            dim=1,
        )
        rows = torch.arange(batch_size, device=self._device)
        eot_indices = lead_length + body_lengths
        token_ids[rows, eot_indices - 1] = self.period_id  # the last clause ends the sentence
        token_ids[rows, eot_indices] = self.eot_id
        digit_view = torch.cat(
            [
                torch.full((batch_size, lead_length), -1, dtype=torch.long, device=self._device),
                body_views,
                torch.full((batch_size, 1), -1, dtype=torch.long, device=self._device),
            ],
            dim=1,
        )
        return _TokenLayout(token_ids=token_ids, eot_indices=eot_indices, digit_view=digit_view)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return _conditional_context(self.ctx, self.meta_net, image_features)

    def _finish(
        self, embeddings: Tensor, layout: _TokenLayout, cluster_ids: Tensor | None
    ) -> Tensor:
        if not self.dynamic:
            return embeddings
        # Row 0 is the zero vector for "not a ratio digit" (digit_view == -1).
        bias_table = F.pad(self.view_bias, (0, 0, 1, 0)).to(embeddings.dtype)
        return embeddings + bias_table[layout.digit_view + 1]


def viewcoop_sentence(
    view_percent: Sequence[int], clause_order: Sequence[int], num_ctx: int = 4
) -> str:
    """The ViewCoOp sentence as text, e.g. for logging or to check the assembly."""
    clauses = [f"{VIEW_NAMES[v]} view is {int(view_percent[v])} percent" for v in clause_order]
    context = " ".join([PLACEHOLDER_WORD] * num_ctx)
    return f"{SENTENCE_LEAD} {context} {VIEWCOOP_BRIDGE} {', '.join(clauses)}."


def _fixed_sentence(num_slots: int) -> str:
    return f"{SENTENCE_LEAD} {' '.join([PLACEHOLDER_WORD] * num_slots)} vehicle."


def _conditional_context(ctx: Tensor, meta_net: MetaNet, image_features: Tensor) -> Tensor:
    """X_m + f_theta(I): [M, W] + [B, 1, W] -> [B, M, W]."""
    bias = meta_net(image_features.to(ctx.device))
    return ctx.unsqueeze(0) + bias.unsqueeze(1).to(ctx.dtype)


def _splice(embeddings: Tensor, start: int, values: Tensor) -> Tensor:
    """embeddings [B, L, W] with positions start..start+K replaced by values [B, K, W]."""
    stop = start + values.shape[1]
    return torch.cat(
        [embeddings[:, :start], values.to(embeddings.dtype), embeddings[:, stop:]], dim=1
    )


def _batch_size(**inputs: Tensor | None) -> int:
    sizes = {name: int(t.shape[0]) for name, t in inputs.items() if t is not None}
    if not sizes:
        raise ValueError(
            f"pass at least one of {', '.join(inputs)}: the batch size is read from them"
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def _checked_view_percent(view_percent: Tensor, batch_size: int, device: torch.device) -> Tensor:
    if view_percent.shape != (batch_size, NUM_VIEWS) or view_percent.is_floating_point():
        raise ValueError(
            f"view_percent must be an integer tensor [B, {NUM_VIEWS}] of whole percents "
            f"(views {VIEW_NAMES}), got {view_percent.dtype} {tuple(view_percent.shape)}"
        )
    view_percent = view_percent.to(device=device, dtype=torch.long)
    if view_percent.numel() and (
        int(view_percent.min()) < 0 or int(view_percent.max()) > MAX_PERCENT
    ):
        raise ValueError(f"view_percent values must lie in [0, {MAX_PERCENT}]")
    return view_percent


def _checked_clause_order(
    clause_order: Tensor | None, batch_size: int, device: torch.device
) -> Tensor:
    canonical = torch.arange(NUM_VIEWS, device=device)
    if clause_order is None:
        return canonical.expand(batch_size, -1)
    if clause_order.shape != (batch_size, NUM_VIEWS):
        raise ValueError(f"clause_order must be [B, {NUM_VIEWS}], got {tuple(clause_order.shape)}")
    clause_order = clause_order.to(device=device, dtype=torch.long)
    if not bool((clause_order.sort(dim=1).values == canonical).all()):
        raise ValueError(f"each clause_order row must be a permutation of 0..{NUM_VIEWS - 1}")
    return clause_order


def _require_bpe_tokenizer(tokenizer) -> None:
    needed = ("encode", "sot_token_id", "eot_token_id", "context_length")
    missing = [name for name in needed if not hasattr(tokenizer, name)]
    if missing:
        raise TypeError(
            f"prompt learners need open_clip's SimpleTokenizer (CLIP BPE); "
            f"{type(tokenizer).__name__} lacks {missing}"
        )


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise RuntimeError(f"expected {text!r} to be one CLIP token, the tokenizer gives {ids}")
    return ids[0]


def _slot_start(lead: list[int], placeholder_id: int, num_slots: int, lead_text: str) -> int:
    positions = [i for i, token in enumerate(lead) if token == placeholder_id]
    start = positions[0] if positions else -1
    if positions != list(range(start, start + num_slots)):
        raise RuntimeError(
            f"expected {num_slots} consecutive placeholder tokens in {lead_text!r}, "
            f"found them at {positions}"
        )
    return start
