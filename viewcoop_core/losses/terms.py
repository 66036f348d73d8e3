"""The loss terms of the paper, each a function of one batch, named by its equation.

* ``batch_hard_triplet``: the triplet half of L_v (L_v = L_ce + L_tri on the image
  pseudo-labels; L_ce is the cluster-memory cross-entropy of ``memory.py``);
* ``text_cluster_loss``: L_t, Eq. 7 (the memory cross-entropy on text features);
* ``graph_constraint_loss``: L_g, Eq. 6;
* ``cross_modal_loss``: L_cm, Eq. 8 (as printed); ``cross_modal_infonce``: L_cm in
  CLIP's form (the ``loss.cm_form`` option).

``objective.py`` sums the active ones into Eq. 9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from viewcoop_core.losses.memory import IGNORE_LABEL, ClusterMemory
from viewcoop_core.vocabulary import GRAPH_WEIGHTINGS


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


def graph_constraint_loss(
    features: Tensor,
    positive: Tensor,
    partners: Tensor | None = None,
    self_index: Tensor | None = None,
    weighting: str = "pairs",
) -> Tensor:
    """Graph-aware constraint loss L_g (Eq. 6): anchors against their graph partners.

    For each anchor j (a row of ``features``) and each partner k other than j itself:
    ``1 - cos(f_j, f_k)`` when k is a graph neighbour of j (``positive[j, k]``), else
    ``1 + cos(f_j, f_k)``.

    Partners (``loss.graph_scope``): by default the batch itself (``partners`` None;
    ``positive`` [B, B], the diagonal is the self pair). With ``partners`` [M, D], e.g.
    the instance memory of all N training images (Eq. 6 sums over the whole data
    distribution), ``positive`` is [B, M] and ``self_index`` [B] gives the column of each
    anchor's own row (or -1 when it has none), which is left out. Only the anchors get a
    gradient; the partners are read detached.

    Weighting (``loss.graph_weighting``):
    * ``pairs``: the mean over all (anchor, partner) pairs. Eq. 6 divides each anchor's
      sum over its N - 1 partners by N, i.e. the same up to a constant factor. The
      positives' share of the gradient is their share of the pairs (in-batch about
      (K - 1) / (B - 1); against all N, a cluster's share of the data).
    * ``sets``: per anchor, the mean over its positives plus the mean over its negatives,
      then the mean over anchors: the graph's neighbours pull as hard as the rest push,
      however few they are among N.

    Args:
        features: float [B, D] image features of the batch (normalised here).
        positive: bool [B, M] (M = B in-batch) graph edges, Eq. 4.
        partners: float [M, D] partner features, or None for the batch itself.
        self_index: long [B], each anchor's own column among the partners (-1: none);
            needed with ``partners``.
        weighting: ``pairs`` or ``sets``.

    Returns:
        Scalar; an in-graph zero when no anchor has a partner.
    """
    batch = features.shape[0]
    columns = batch if partners is None else partners.shape[0]
    if positive.shape != (batch, columns) or positive.dtype != torch.bool:
        raise ValueError(
            f"positive must be a bool [{batch}, {columns}] mask, "
            f"got {positive.dtype} {tuple(positive.shape)}"
        )
    if weighting not in GRAPH_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {GRAPH_WEIGHTINGS}, got {weighting!r}")
    unit = F.normalize(features, dim=1)
    if partners is None:
        other = unit
        not_self = ~torch.eye(batch, dtype=torch.bool, device=features.device)
    else:
        if self_index is None or self_index.shape != (batch,):
            raise ValueError(f"self_index must be [{batch}] with partners, got {self_index}")
        other = F.normalize(partners.detach().to(unit.dtype), dim=1)
        not_self = torch.ones(batch, columns, dtype=torch.bool, device=features.device)
        has_self = self_index >= 0
        rows = torch.arange(batch, device=features.device)[has_self]
        not_self[rows, self_index[has_self].to(features.device)] = False
    if not bool(not_self.any()):
        return _in_graph_zero(features)
    cos = unit @ other.t()
    pull, push = positive & not_self, ~positive & not_self
    if weighting == "pairs":
        per_pair = torch.where(positive, 1.0 - cos, 1.0 + cos)
        return (per_pair * not_self).sum() / not_self.sum()
    pulled = ((1.0 - cos) * pull).sum(1) / pull.sum(1).clamp(min=1)
    pushed = ((1.0 + cos) * push).sum(1) / push.sum(1).clamp(min=1)
    return (pulled + pushed).mean()


def _check_pairs(image_features: Tensor, text_features: Tensor) -> int:
    """B, after checking both are [B, D] (row j of each describes sample j)."""
    if image_features.shape != text_features.shape or image_features.ndim != 2:
        raise ValueError(
            "image_features and text_features must both be [B, D], got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    return image_features.shape[0]


def _cosines(image_features: Tensor, text_features: Tensor) -> Tensor:
    """[B, B] cosine of every image with every text."""
    return F.normalize(image_features, dim=1) @ F.normalize(text_features, dim=1).t()


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
    batch = _check_pairs(image_features, text_features)
    if batch == 0:
        return _in_graph_zero(image_features) + _in_graph_zero(text_features)
    cos = _cosines(image_features, text_features)
    matched = torch.eye(batch, dtype=torch.bool, device=cos.device)
    return torch.where(matched, 1.0 - cos, 1.0 + cos).sum() / batch**2


def cross_modal_infonce(
    image_features: Tensor,
    text_features: Tensor,
    temperature: float,
    positive: Tensor | None = None,
) -> Tensor:
    """L_cm as CLIP's loss (``loss.cm_form: clip``; the paper calls L_cm "similar to CLIP").

    Over the [B, B] similarity matrix ``cos(f^i_j, f^t_k) / temperature``: the mean of
    the image->text and the text->image cross-entropy. Row j's positives are
    ``positive[j]`` (default: only its own prompt, i.e. exactly CLIP's loss); with
    several positives (e.g. the prompts of the image's pseudo-identity mates) each
    positive's log-probability is averaged, as in supervised contrastive learning.

    Unlike Eq. 8 as printed (linear in the cosines, / B^2) the softmax puts the gradient
    on the pairs that are confused, and the matched pair is not 1 of B^2 terms.

    Args:
        image_features, text_features: float [B, D], row j of each describes sample j.
        temperature: the softmax temperature (> 0).
        positive: bool [B, B], ``positive[j, k]`` = text k matches image j; the
            diagonal is always a positive.
    """
    batch = _check_pairs(image_features, text_features)
    if batch == 0:
        return _in_graph_zero(image_features) + _in_graph_zero(text_features)
    logits = _cosines(image_features, text_features) / temperature
    matches = torch.eye(batch, dtype=torch.bool, device=logits.device)
    if positive is not None:
        matches = matches | positive

    def supervised_ce(scores: Tensor, targets: Tensor) -> Tensor:
        log_prob = scores.log_softmax(dim=1)
        per_row = (log_prob * targets).sum(1) / targets.sum(1)
        return -per_row.mean()

    targets = matches.to(logits.dtype)
    return (supervised_ce(logits, targets) + supervised_ce(logits.t(), targets.t())) / 2


def text_cluster_loss(memory: ClusterMemory, text_features: Tensor, y_txt: Tensor) -> Tensor:
    """L_t, Eq. 7: cross-entropy of L2-normalised text features [B, D] against the text
    centroids held by ``memory`` with the text pseudo-labels y^t [B] (-1 ignored).

    Eq. 7 prints no temperature; with raw cosines (logits in [-1, 1]) the softmax over
    hundreds of clusters is almost uniform and the loss barely trains, so it shares
    L_v's temperature (``memory.temperature``, 0.05). Updates the memory.
    """
    return memory(F.normalize(text_features, dim=1), y_txt)
