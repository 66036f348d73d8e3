"""Fig. 4, distance distributions of sample pairs.

Cosine distances (1 - cos) of positive pairs (same true identity) and negative pairs
drawn from a random subset of test images; red = positive, green = negative, one panel
per model. Summarised by ``distance_separation`` (means, spreads, histogram overlap and
the ROC-AUC of telling the two apart by distance), a scalar that can be tracked like mAP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import rankdata
from torch import Tensor
from torch.nn import functional as F

from viewcoop_core.figures.saving import save_figure

POSITIVE_COLOUR = "tab:red"
NEGATIVE_COLOUR = "tab:green"
HISTOGRAM_BINS = 100
_PAIR_CHUNK = 16_384


def sample_pair_indices(
    ids: Sequence[int] | np.ndarray,
    max_samples: int = 5000,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative index pairs among a random subset of samples.

    Up to ``max_samples`` samples are drawn without replacement; among them every
    unordered pair (i < j) with the same id is a positive (a random ``max_pairs`` of them
    when there are more), and as many distinct different-id pairs as there are positives
    are drawn uniformly without replacement as negatives (fewer if the subset has fewer).

    Args:
        ids: N true identities (ints).
        max_samples: size of the random subset (the paper uses 5000).
        max_pairs: cap on the number of positive (hence negative) pairs.
        seed: seeds the subset and the pair draws.

    Returns:
        ``(positive, negative)``: int64 [P, 2] and [Q, 2], indices into ``ids``, first
        column smaller than the second; Q = min(P, number of different-id pairs).

    Raises:
        ValueError: no identity occurs twice in the subset (no positive pair exists).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a flat sequence of N identities, got shape {ids.shape}")
    if max_samples < 2 or max_pairs < 1:
        raise ValueError(
            f"need max_samples >= 2 and max_pairs >= 1, got {max_samples}, {max_pairs}"
        )
    rng = np.random.default_rng(seed)
    subset = np.arange(len(ids))
    if len(ids) > max_samples:
        subset = np.sort(rng.choice(len(ids), size=max_samples, replace=False))
    positive = _positive_pairs(ids[subset])
    if len(positive) == 0:
        raise ValueError(
            f"no positive pair: none of the {len(subset)} sampled identities occurs twice; "
            "use a split with several images per identity (e.g. the gallery) or a larger max_samples"
        )
    if len(positive) > max_pairs:
        positive = positive[np.sort(rng.choice(len(positive), size=max_pairs, replace=False))]
    negative = _negative_pairs(ids[subset], len(positive), rng)
    return subset[positive], subset[negative]


def _positive_pairs(ids: np.ndarray) -> np.ndarray:
    """All same-id pairs (i < j) of ``ids``, int64 [P, 2], grouped by identity."""
    order = np.argsort(ids, kind="stable")
    _, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    pairs = []
    for start, count in zip(starts, counts):
        if count < 2:
            continue
        members = np.sort(order[start : start + count])
        first, second = np.triu_indices(count, k=1)
        pairs.append(np.stack([members[first], members[second]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def _negative_pairs(ids: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct different-id pairs (i < j), uniformly without replacement.

    Draws distinct cells of the n x n grid and keeps those above the diagonal with
    different ids; the draw is sized from the known fraction of such cells and doubled
    until enough survive (it ends at the whole grid, so it always terminates). Never
    materialises all ~n^2/2 pairs of a 5000-sample subset.
    """
    n = len(ids)
    _, id_counts = np.unique(ids, return_counts=True)
    num_negative = (n * (n - 1) - int((id_counts * (id_counts - 1)).sum())) // 2
    count = min(count, num_negative)
    if count == 0:
        return np.zeros((0, 2), dtype=np.int64)
    draw = min(n * n, math.ceil(1.1 * count * n * n / num_negative) + 16)
    while True:
        cells = rng.choice(n * n, size=draw, replace=False)
        first, second = np.divmod(cells, n)
        keep = (first < second) & (ids[first] != ids[second])
        if keep.sum() >= count or draw == n * n:
            return np.stack([first[keep], second[keep]], axis=1)[:count]
        draw = min(n * n, 2 * draw)


def pair_cosine_distances(features: Tensor, pairs: np.ndarray) -> np.ndarray:
    """1 - cos(f_a, f_b) for each row (a, b) of ``pairs``.

    Args:
        features: float [N, D], normalised or not.
        pairs: int [M, 2] row indices into ``features``.

    Returns:
        float32 [M], in [0, 2]. Computed in chunks of pairs to bound memory.
    """
    features = F.normalize(torch.as_tensor(features).float(), dim=-1)
    index = torch.as_tensor(
        np.asarray(pairs, dtype=np.int64).reshape(-1, 2), device=features.device
    )
    chunks = [
        1.0 - (features[block[:, 0]] * features[block[:, 1]]).sum(dim=-1)
        for block in index.split(_PAIR_CHUNK)
    ]
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(chunks).cpu().numpy().astype(np.float32)


def pair_distance_samples(
    features: Tensor,
    ids: Sequence[int],
    max_samples: int = 5000,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of positive and negative pairs, the data of Fig. 4.

    Args:
        features: float [N, D] features of N images (e.g. the gallery).
        ids: N true identities.
        max_samples, max_pairs, seed: see ``sample_pair_indices``.

    Returns:
        ``(positive, negative)`` float32 [P] and [Q] distances 1 - cos.
    """
    if len(features) != len(ids):
        raise ValueError(f"features has {len(features)} rows but ids has {len(ids)} entries")
    positive, negative = sample_pair_indices(ids, max_samples, max_pairs, seed)
    return pair_cosine_distances(features, positive), pair_cosine_distances(features, negative)


def distance_separation(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """How well distances tell positive pairs from negative pairs.

    Returns a dict of floats: ``pos_mean``, ``pos_std``, ``neg_mean``, ``neg_std``,
    ``gap`` (neg_mean - pos_mean); ``auc``, the probability that a random negative pair
    is farther apart than a random positive pair (ties count half; the ROC-AUC of
    scoring "negative" by distance, 1.0 = perfectly separated, 0.5 = indistinguishable);
    ``overlap``, the area shared by the two density histograms on 100 common bins
    (1.0 = identical distributions, 0.0 = disjoint supports).
    """
    positive = np.asarray(positive, dtype=np.float64).ravel()
    negative = np.asarray(negative, dtype=np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        raise ValueError(
            f"need at least one positive and one negative distance, got {positive.size} and {negative.size}"
        )
    # Mann-Whitney U from mid-ranks: AUC = (rank sum of negatives - its minimum) / (P * Q).
    ranks = rankdata(np.concatenate([positive, negative]))
    negative_rank_sum = ranks[positive.size :].sum()
    auc = (negative_rank_sum - negative.size * (negative.size + 1) / 2) / (
        positive.size * negative.size
    )
    return {
        "pos_mean": float(positive.mean()),
        "pos_std": float(positive.std()),
        "neg_mean": float(negative.mean()),
        "neg_std": float(negative.std()),
        "gap": float(negative.mean() - positive.mean()),
        "auc": float(auc),
        "overlap": histogram_overlap(positive, negative),
    }


def histogram_overlap(a: np.ndarray, b: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Shared probability mass of two samples' histograms on common bins, in [0, 1]."""
    low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if high <= low:  # every value equal: one bin holds both samples entirely
        return 1.0
    edges = np.linspace(low, high, bins + 1)
    mass_a = np.histogram(a, edges)[0] / a.size
    mass_b = np.histogram(b, edges)[0] / b.size
    return float(np.minimum(mass_a, mass_b).sum())


def plot_distance_distributions(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    bins: int | None = None,
) -> Path:
    """Fig. 4: one panel per model, density of positive (red) and negative (green) distances.

    Densities are histograms on bins shared by all panels (drawn as lines, like the
    paper's curves); each panel title carries the separation AUC.

    Args:
        curves: label -> (positive distances, negative distances), in panel order.
        path: the PNG to write (parent folders are created).
        bins: number of bins; ``None`` for sqrt of the smallest sample, within [10, 100]
            (100 bins over a few hundred pairs would draw noise, not a density).
    """
    if not curves:
        raise ValueError("curves is empty: pass at least one label -> (positive, negative) entry")
    if bins is None:
        smallest = min(min(np.size(p), np.size(n)) for p, n in curves.values())
        bins = int(np.clip(math.isqrt(smallest), 10, HISTOGRAM_BINS))
    values = np.concatenate(
        [np.concatenate([np.ravel(p), np.ravel(n)]) for p, n in curves.values()]
    )
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high if high > low else low + 1e-3, bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])

    figure = Figure(figsize=(4.0 * len(curves), 3.4), layout="constrained")
    axes = figure.subplots(1, len(curves), sharex=True, squeeze=False)[0]
    for ax, (label, (positive, negative)) in zip(axes, curves.items()):
        stats = distance_separation(positive, negative)
        for sample, colour, name in (
            (positive, POSITIVE_COLOUR, "positive"),
            (negative, NEGATIVE_COLOUR, "negative"),
        ):
            density = np.histogram(np.ravel(sample), edges, density=True)[0]
            ax.plot(
                centres, density, color=colour, linewidth=1.6, label=f"{name} ({np.size(sample)})"
            )
            ax.fill_between(centres, density, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(
            f"{label}\nAUC {stats['auc']:.3f}, overlap {stats['overlap']:.2f}", fontsize=10
        )
        ax.set_xlabel("cosine distance (1 - cos)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, frameon=False)
    axes[0].set_ylabel("density")
    return save_figure(figure, path)


# -- Fig. 5: image-text discrepancy -----------------------------------------------------
