"""The ViewCoOp training objective, Eq. 6-9 of the paper, and its ablation presets.

``L = L_v + L_t + L_g + L_cm`` (Eq. 9), where

* ``L_v = L_ce + L_tri``: cluster-memory cross-entropy of the image features against
  the visual centroids (:class:`~viewcoop_core.memory.ClusterMemory`) plus a batch-hard
  triplet loss, both on the visual pseudo-labels y^i;
* ``L_t`` (Eq. 7): the same memory cross-entropy for the text features against the
  text centroids with the text pseudo-labels y^t. Eq. 7 prints no temperature; with
  raw cosines (logits in [-1, 1]) the softmax over hundreds of clusters is almost
  uniform and the loss barely trains, so it shares L_v's temperature (0.05);
* ``L_g`` (Eq. 6): :func:`graph_constraint_loss`, on the image features;
* ``L_cm`` (Eq. 8): :func:`cross_modal_loss`, image against text features.

Gradient routing. The paper updates the image encoder with L_v + L_g + L_cm and the
text side (prompt learner, meta-net, text encoder) with L_t + L_cm. One backward of
the sum gives exactly that provided the prompt's meta-net f_theta reads DETACHED image
features: then L_t reaches the image encoder through no path, L_v and L_g never touch
text features, and L_cm is the only term whose graph contains both encoders. Nothing
here detaches anything; the contract is on the prompt learner's input.

Cosine-based terms normalise their inputs themselves; :class:`ViewCoOpLoss` also
normalises once per batch, because the memory cross-entropy and the triplet distance
are defined on the unit sphere (the same geometry as the cosine ranking at test time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.memory import IGNORE_LABEL, ClusterMemory

logger = logging.getLogger(__name__)

LOSS_TERMS: tuple[str, ...] = ("v", "t", "g", "cm")

LOSS_PRESETS: dict[str, frozenset[str]] = {
    "baseline": frozenset({"v"}),
    "+viewcoop": frozenset({"v", "t", "cm"}),
    "+cmg": frozenset({"v", "g"}),
    "full": frozenset({"v", "t", "g", "cm"}),
}
"""Loss terms of the rows of the paper's Table 1 (module ablation).

* ``baseline``: "the image encoder directly ... without any ablation modules": L_v.
* ``+viewcoop``: adds the text prompt branch, which is trained by its own pseudo-label
  loss L_t and aligned to the image by L_cm; no graph.
* ``+cmg``: adds the cross-modal mutual graph, whose only loss is L_g. The graph still
  needs text pseudo-labels y^t, so the text features are extracted and clustered, but
  no text term trains them.
* ``full`` ("Ours"): everything, Eq. 9.

Caveat: the paper's "w/ CMG" numbers are identical to Table 2's "CoOp" row, which
suggests that run trained the whole framework (L_t and L_cm included) with a CoOp
prompt instead of ViewCoOp. That reading is ``full`` with ``prompt = coop``; the
``+cmg`` preset here is the literal term-wise ablation.
"""


def parse_losses(value: str | Iterable[str]) -> frozenset[str]:
    """The set of active loss terms from a preset name or a list of terms.

    Accepts a preset of :data:`LOSS_PRESETS`, one term, a comma-separated string
    ("v,t,cm") or an iterable of terms from :data:`LOSS_TERMS`.
    """
    if isinstance(value, str):
        if value in LOSS_PRESETS:
            return LOSS_PRESETS[value]
        terms = [part.strip() for part in value.split(",") if part.strip()]
    else:
        terms = list(value)
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown or not terms:
        detail = f" (unknown: {unknown})" if unknown else ""
        raise ValueError(
            f"loss terms {value!r}{detail}: expected a preset {sorted(LOSS_PRESETS)} "
            f"or a non-empty list of terms from {list(LOSS_TERMS)}"
        )
    return frozenset(terms)


def _in_graph_zero(x: Tensor) -> Tensor:
    """A zero that still depends on ``x``: upstream parameters get a defined zero gradient."""
    return x.sum() * 0.0


def _pairwise_euclidean(x: Tensor) -> Tensor:
    """[B, B] euclidean distances between the rows of ``x`` [B, D]."""
    sq_norm = (x * x).sum(dim=1)
    sq_dist = sq_norm[:, None] + sq_norm[None, :] - 2.0 * (x @ x.t())
    # The clamp zeroes the gradient at d = 0 (the diagonal), where sqrt's is infinite.
    return sq_dist.clamp(min=1e-12).sqrt()


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on euclidean distances.

    For each anchor a: ``relu(max_{p: y_p = y_a, p != a} d(a, p) - min_{n: y_n != y_a} d(a, n)
    + margin)``, averaged over the anchors that have at least one positive and one
    negative. Samples labelled -1 take no part (neither anchor, positive nor negative),
    as in the memory cross-entropy.

    Args:
        features: float [B, D].
        labels: long [B].
        margin: hinge margin.

    Returns:
        Scalar; a zero that still depends on ``features`` when no anchor qualifies.
        No host synchronisation.
    """
    batch = features.shape[0]
    valid = labels != IGNORE_LABEL
    both_valid = valid[:, None] & valid[None, :]
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(batch, dtype=torch.bool, device=features.device)
    positive = same & both_valid & not_self
    negative = ~same & both_valid

    dist = _pairwise_euclidean(features)
    hardest_positive = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = dist.masked_fill(~negative, float("inf")).amin(dim=1)
    eligible = positive.any(dim=1) & negative.any(dim=1)
    # where() keeps the +-inf of anchors without positives/negatives out of the arithmetic.
    gap = torch.where(eligible, hardest_positive - hardest_negative, torch.zeros_like(dist[:, 0]))
    hinge = F.relu(gap + margin) * eligible
    return hinge.sum() / eligible.sum().clamp(min=1)


def graph_constraint_loss(features: Tensor, positive: Tensor) -> Tensor:
    """Graph-aware constraint loss L_g (Eq. 6), evaluated in-batch.

    For each anchor j and every other sample k != j of the batch:
    ``1 - cos(f_j, f_k)`` when k is a graph neighbour of j (``positive[j, k]``), else
    ``1 + cos(f_j, f_k)``. The sum is divided by the number of ordered pairs B(B-1).

    In-batch rather than against all N samples: the P x K pseudo-identity sampler puts
    K - 1 same-cluster (hence graph-neighbour, for tau containing 1 or 2) samples beside
    every anchor, so each batch has positives; an all-N version would need an instance
    memory of N features refreshed by momentum, which the paper does not describe.

    Normalisation: Eq. 6 divides the sum over anchors and their N - 1 partners by N,
    i.e. the mean per-anchor SUM, which grows with the number of partners. Dividing by
    B(B-1) instead gives the mean per pair, in [0, 2], independent of the batch size
    and on the same scale as L_cm (Eq. 8, a mean over B^2 pairs). The two differ by the
    constant factor B - 1, i.e. only in L_g's weight within Eq. 9.

    Args:
        features: float [B, D] image features (normalised here; cosine is scale-free).
        positive: bool [B, B], ``positive[j, k]`` = edge between j and k in the mutual
            graph (Eq. 4). The diagonal is ignored.

    Returns:
        Scalar; an in-graph zero for B < 2.
    """
    batch = features.shape[0]
    if positive.shape != (batch, batch) or positive.dtype != torch.bool:
        raise ValueError(
            f"positive must be a bool [{batch}, {batch}] mask, "
            f"got {positive.dtype} {tuple(positive.shape)}"
        )
    if batch < 2:
        return _in_graph_zero(features)
    unit = F.normalize(features, dim=1)
    cos = unit @ unit.t()
    per_pair = torch.where(positive, 1.0 - cos, 1.0 + cos)
    not_self = ~torch.eye(batch, dtype=torch.bool, device=features.device)
    return (per_pair * not_self).sum() / (batch * (batch - 1))


def cross_modal_loss(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Cross-modal alignment loss L_cm (Eq. 8), image against text.

    ``(sum_j (1 - cos(f^i_j, f^t_j)) + sum_{j != k} (1 + cos(f^i_j, f^t_k))) / B^2``.
    The paper prints the image feature f^i on both sides of S, which would make the
    diagonal term identically 0 and leave the text side untouched, contradicting "the
    text encoder is updated by L_t + L_cm"; the image-text reading is used.

    Args:
        image_features: float [B, D]; text_features: float [B, D], row j is the prompt
            of image j. Both normalised here.

    Returns:
        Scalar; an in-graph zero for B = 0.
    """
    if image_features.shape != text_features.shape or image_features.ndim != 2:
        raise ValueError(
            "image_features and text_features must both be [B, D], got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    batch = image_features.shape[0]
    if batch == 0:
        return _in_graph_zero(image_features) + _in_graph_zero(text_features)
    cos = F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).t()
    matched = torch.eye(batch, dtype=torch.bool, device=cos.device)
    return torch.where(matched, 1.0 - cos, 1.0 + cos).sum() / batch**2


class ViewCoOpLoss(nn.Module):
    """Eq. 9 with the active terms only, and the two cluster memories it needs.

    Output keys per term: ``v`` -> ``L_v_ce``, ``L_v_tri``; ``t`` -> ``L_t``;
    ``g`` -> ``L_g``; ``cm`` -> ``L_cm``; plus ``loss`` = their sum. Terms not enabled
    are neither computed nor returned.
    """

    def __init__(
        self,
        num_features: int,
        terms: str | Iterable[str],
        temperature: float = 0.05,
        momentum: float = 0.2,
        margin: float = 0.3,
        gather: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    ):
        super().__init__()
        self.terms = parse_losses(terms)
        self.margin = margin
        self.image_memory = ClusterMemory(num_features, temperature, momentum, gather)
        self.text_memory = ClusterMemory(num_features, temperature, momentum, gather)

    @property
    def needs_text(self) -> bool:
        """Whether the batch's text features are used (L_t or L_cm active)."""
        return bool(self.terms & {"t", "cm"})

    def reset(self, img_centroids: Tensor, txt_centroids: Tensor | None = None) -> None:
        """Rebuild the memories from this epoch's centroids ([C_i, D] and [C_t, D]).

        ``txt_centroids`` may be None when L_t is off.
        """
        self.image_memory.reset(img_centroids)
        if txt_centroids is not None:
            self.text_memory.reset(txt_centroids)
        elif "t" in self.terms:
            raise ValueError("loss term 't' (L_t) is active: reset() needs txt_centroids")

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor | None,
        y_img: Tensor,
        y_txt: Tensor | None = None,
        graph_positive: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The active loss terms and their sum.

        Args:
            image_features: float [B, D] from the image encoder (any norm).
            text_features: float [B, D] from the text encoder; needed for L_t and L_cm.
            y_img: long [B] visual pseudo-labels (-1 ignored).
            y_txt: long [B] text pseudo-labels (-1 ignored); needed for L_t.
            graph_positive: bool [B, B] mutual-graph edges among the batch; needed for L_g.

        Returns:
            ``{term_key: scalar, ..., "loss": scalar}``. Updates the memories.
        """
        self._check_inputs(text_features, y_txt, graph_positive)
        image_unit = F.normalize(image_features, dim=1)
        out: dict[str, Tensor] = {}
        if "v" in self.terms:
            out["L_v_ce"] = self.image_memory(image_unit, y_img)
            out["L_v_tri"] = batch_hard_triplet(image_unit, y_img, self.margin)
        if "t" in self.terms:
            out["L_t"] = self.text_memory(F.normalize(text_features, dim=1), y_txt)
        if "g" in self.terms:
            out["L_g"] = graph_constraint_loss(image_unit, graph_positive)
        if "cm" in self.terms:
            out["L_cm"] = cross_modal_loss(image_unit, text_features)
        out["loss"] = torch.stack(list(out.values())).sum()
        return out

    def _check_inputs(
        self, text_features: Tensor | None, y_txt: Tensor | None, graph_positive: Tensor | None
    ) -> None:
        missing = []
        if self.needs_text and text_features is None:
            missing.append("text_features (for 't' / 'cm')")
        if "t" in self.terms and y_txt is None:
            missing.append("y_txt (for 't')")
        if "g" in self.terms and graph_positive is None:
            missing.append("graph_positive (for 'g')")
        if missing:
            raise ValueError(f"loss terms {sorted(self.terms)} need: {', '.join(missing)}")

    def extra_repr(self) -> str:
        return f"terms={sorted(self.terms)}, margin={self.margin}"
