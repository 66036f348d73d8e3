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
