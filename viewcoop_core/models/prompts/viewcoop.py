"""ViewCoOp (the paper's prompt): CoCoOp context plus the four view-proportion clauses.

Eq. 1: R(view_j) = E(ratio of view_j's patches) + X_view_j, the word embedding of the
ratio's digits plus a learnable bias per view (``dynamic``; ``viewcoop_static`` has no
bias). Eq. 2: E(T_n) = cat(w, cat(X_m(I_n)), cat(R(view_j))), the embedded sentence,
with X_m(I_n) = X_m + f_theta(I_n). The ratios themselves come from the view masks
(``viewcoop_core.views``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.models.prompts.base import (
    PLACEHOLDER_WORD,
    SENTENCE_LEAD,
    MetaNet,
    PromptLearner,
    TokenLayout,
    conditional_context,
    single_token,
)
from viewcoop_core.vocabulary import NUM_VIEWS, VIEW_NAMES

MAX_PERCENT = 100
VIEWCOOP_BRIDGE = "vehicle with the proportions of"


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

    def __init__(
        self,
        token_embedding: nn.Embedding,
        tokenizer,
        feature_dim: int,
        num_ctx: int = 4,
        seed: int = 0,
        dynamic: bool = True,
        reduction: int = 16,
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
        self.meta_net = MetaNet(feature_dim, self.width, self._generator("meta_net"), reduction).to(
            self._device
        )
        if dynamic:
            # Zero-init: training starts from the static prompt and learns each view's shift.
            self.view_bias = nn.Parameter(torch.zeros(NUM_VIEWS, self.width, device=self._device))
        self.period_id = single_token(tokenizer, ".")
        self._build_clause_table(tokenizer)
        self._check_assembly_matches_tokenizer(tokenizer)

    def _build_clause_table(self, tokenizer) -> None:
        """Token ids of "<view> view is <R> percent ," for every (view, R in 0..100).

        Rows are flattened to view * 101 + R: one-index row lookups are far faster than
        two-index advanced indexing on the CPU.
        """
        digit_ids = [single_token(tokenizer, str(d)) for d in range(10)]
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

    def _token_layout(self, batch_size, view_percent, clause_order) -> TokenLayout:
        """Eq. 2's word part w, per sample: the lead, the M context slots and the four
        clauses "<view> view is <digits of R_j> percent" in the sample's clause order.
        ``PromptLearner.forward`` then embeds it and splices in X_m(I_n)."""
        view_percent = checked_view_percent(view_percent, batch_size, self._device)
        order = checked_clause_order(clause_order, batch_size, self._device)
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
        return TokenLayout(token_ids=token_ids, eot_indices=eot_indices, digit_view=digit_view)

    def _context_vectors(self, batch_size, image_features, cluster_ids) -> Tensor:
        return conditional_context(self.ctx, self.meta_net, image_features)

    def _finish(
        self, embeddings: Tensor, layout: TokenLayout, cluster_ids: Tensor | None
    ) -> Tensor:
        """Eq. 1's learnable view bias: R(view_j) = E(digits of R_j) + X_view_j, added at
        every digit token of view j's ratio (dynamic only; static keeps E alone)."""
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


def checked_view_percent(view_percent: Tensor, batch_size: int, device: torch.device) -> Tensor:
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


def checked_clause_order(
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
