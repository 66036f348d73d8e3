"""The paper's qualitative figures (Fig. 4, 5, 6) as numbers and PNG files.

* Fig. 4, distance distributions of sample pairs: cosine distances (1 - cos) of
  positive pairs (same true identity) and negative pairs drawn from a random subset of
  test images; red = positive, green = negative, one panel per model. Summarised by
  ``distance_separation`` (means, spreads, histogram overlap and the ROC-AUC of telling
  the two apart by distance), a scalar that can be tracked like mAP.
* Fig. 5, image-text discrepancy: the maximum mean discrepancy (MMD) between the image
  and the text feature distributions, and a scatter of the image against the text value
  of the same feature coordinate for matched (image, prompt) pairs with its Pearson
  correlation, once with the text encoder trained and once without.
* Fig. 6, patch-to-global correlation: cosine between every projected patch token and
  the projected CLS feature on the patch grid (jet colour map), next to the image, its
  view mask and the patch-level view mask at the model's patch size.

Plots use matplotlib's object API (``Figure`` + the Agg canvas ``savefig`` picks for PNG),
never ``pyplot``: no global backend switch, no figure registry, safe in worker threads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.stats import rankdata
from torch import Tensor
from torch.nn import functional as F

# The patch-level view mask must follow exactly the rule of the patch-level view
# proportions, so the figure reuses that module's helper instead of restating it.
from viewcoop_core.views import MASK_LABELS, VIEW_NAMES, patch_majority_labels

logger = logging.getLogger(__name__)

POSITIVE_COLOUR = "tab:red"
NEGATIVE_COLOUR = "tab:green"
# Index = mask label (0 background, 1 front, 2 back, 3 top, 4 side).
VIEW_COLOURS: tuple[str, ...] = ("#202020", "#d62728", "#1f77b4", "#2ca02c", "#ffbf00")
VIEW_CMAP = ListedColormap(VIEW_COLOURS, name="views")
HISTOGRAM_BINS = 100
_DPI = 120
_PAIR_CHUNK = 16_384


# -- Fig. 4: distances of positive and negative pairs -----------------------------------


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
    return _save(figure, path)


# -- Fig. 5: image-text discrepancy -----------------------------------------------------


def median_heuristic_bandwidth(samples: Tensor, max_points: int = 1000, seed: int = 0) -> float:
    """Median Euclidean distance between distinct points of ``samples`` [N, D].

    The median is taken over all pairs of a random subset of ``max_points`` rows (all
    rows when N <= max_points): the full median over 10,000 pooled rows would need a
    10^8-entry sort for a number that a 1000-row subset pins down well.
    """
    samples = torch.as_tensor(samples).double()
    if len(samples) > max_points:
        generator = torch.Generator().manual_seed(seed)
        samples = samples[
            torch.randperm(len(samples), generator=generator)[:max_points].to(samples.device)
        ]
    first, second = torch.triu_indices(len(samples), len(samples), offset=1, device=samples.device)
    distances = torch.cdist(samples, samples)[first, second]
    if distances.numel() == 0:
        raise ValueError("the median heuristic needs at least two samples")
    # quantile interpolates between the two middle values; Tensor.median takes the lower one.
    bandwidth = float(torch.quantile(distances, 0.5))
    return bandwidth if bandwidth > 0 else 1.0


def _mean_gaussian_kernel(x: Tensor, y: Tensor, bandwidth: float, chunk: int = 2048) -> float:
    """Mean of exp(-||x_a - y_b||^2 / (2 bandwidth^2)) over all a, b, in row chunks."""
    total = 0.0
    for block in x.split(chunk):
        total += float(torch.exp(-torch.cdist(block, y).square() / (2.0 * bandwidth**2)).sum())
    return total / (len(x) * len(y))


def image_text_mmd(
    image_features: Tensor,
    text_features: Tensor,
    max_samples: int = 5000,
    bandwidth: float | None = None,
    seed: int = 0,
) -> float:
    """Maximum mean discrepancy between the image and the text feature distributions.

    MMD(P, Q) = ||mu_P - mu_Q||_H for the Gaussian kernel k(x, y) = exp(-||x - y||^2 /
    (2 sigma^2)), estimated with the biased (V-statistic) form
    sqrt(mean k(X, X') + mean k(Y, Y') - 2 mean k(X, Y)), which is never negative and is
    0 exactly when the two samples coincide. sigma is the median heuristic on the pooled
    sample (``median_heuristic_bandwidth``) unless ``bandwidth`` is given; a fixed
    bandwidth is what makes values of two models comparable, so pass the same one when
    comparing. Features are L2-normalised first (the space the losses compare in). The
    paper reports MMD on 5000 random samples without stating kernel or estimator.

    Args:
        image_features: float [N, D].
        text_features: float [M, D].
        max_samples: random rows kept from each side (the same rows when N == M, so
            matched pairs stay matched).
        bandwidth: sigma; ``None`` for the median heuristic.
        seed: seeds the subsampling and the median subset.
    """
    x, y = _matched_subsample(image_features, text_features, max_samples, seed)
    if bandwidth is None:
        bandwidth = median_heuristic_bandwidth(torch.cat([x, y]), seed=seed)
    squared = (
        _mean_gaussian_kernel(x, x, bandwidth)
        + _mean_gaussian_kernel(y, y, bandwidth)
        - 2.0 * _mean_gaussian_kernel(x, y, bandwidth)
    )
    return math.sqrt(max(squared, 0.0))


def _matched_subsample(a: Tensor, b: Tensor, max_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """Normalised float64 copies of ``a`` [N, D] and ``b`` [M, D], each at most ``max_samples``
    rows; one index draw serves both when N == M so that pairs (a_n, b_n) survive together."""
    a = F.normalize(torch.as_tensor(a).double(), dim=-1)
    b = F.normalize(torch.as_tensor(b).double(), dim=-1).to(a.device)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"need [N, D] and [M, D] features, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    if len(a) == len(b) and len(a) > max_samples:
        keep = torch.randperm(len(a), generator=generator)[:max_samples].to(a.device)
        return a[keep], b[keep]
    if len(a) > max_samples:
        a = a[torch.randperm(len(a), generator=generator)[:max_samples].to(a.device)]
    if len(b) > max_samples:
        b = b[torch.randperm(len(b), generator=generator)[:max_samples].to(b.device)]
    return a, b


def image_text_discrepancy(
    image_features: Tensor,
    text_features: Tensor,
    max_samples: int = 5000,
    max_points: int = 20_000,
    bandwidth: float | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Everything Fig. 5 shows for one setting, from matched image/prompt features.

    Args:
        image_features, text_features: float [N, D]; row n of both is one training image
            and its own prompt.
        max_samples: rows used (the paper: 5000 random samples).
        max_points: scatter points kept (a random subset of the N' x D coordinates).
        bandwidth: MMD kernel width (``None``: median heuristic, see ``image_text_mmd``).
        seed: seeds every random choice.

    Returns:
        ``mmd`` (float); ``pearson`` (float), correlation between the image and the text
        value of the same coordinate of the same pair over all N' x D coordinates;
        ``pair_distance_mean`` (float), mean 1 - cos(image_n, text_n); and for the
        scatter ``image_values``/``text_values`` float32 [max_points] (matched
        coordinates) and ``pair_distance`` float32 [N'].
    """
    if len(image_features) != len(text_features):
        raise ValueError(
            f"image and text features must be matched pairs: {len(image_features)} vs {len(text_features)} rows"
        )
    x, y = _matched_subsample(image_features, text_features, max_samples, seed)
    image_values, text_values = x.reshape(-1), y.reshape(-1)
    pearson = float(torch.corrcoef(torch.stack([image_values, text_values]))[0, 1])
    generator = torch.Generator().manual_seed(seed + 1)
    if image_values.numel() > max_points:
        keep = torch.randperm(image_values.numel(), generator=generator)[:max_points].to(x.device)
        image_values, text_values = image_values[keep], text_values[keep]
    pair_distance = 1.0 - (x * y).sum(dim=-1)
    return {
        "mmd": image_text_mmd(x, y, max_samples=len(x), bandwidth=bandwidth, seed=seed),
        "pearson": pearson,
        "pair_distance_mean": float(pair_distance.mean()),
        "image_values": image_values.float().cpu().numpy(),
        "text_values": text_values.float().cpu().numpy(),
        "pair_distance": pair_distance.float().cpu().numpy(),
    }


def plot_image_text_discrepancy(
    results: Mapping[str, Mapping[str, object]], path: str | Path
) -> Path:
    """Fig. 5: per setting, image vs text value of the same feature coordinate.

    Blue points are matched (image, prompt) coordinates, the red line the least-squares
    fit whose slope direction and tightness the Pearson r in the legend summarises; the
    title carries the MMD. ``results`` maps a setting label (e.g. "text encoder frozen",
    "text encoder trained") to the dict of ``image_text_discrepancy``.
    """
    if not results:
        raise ValueError(
            "results is empty: pass at least one setting -> image_text_discrepancy(...) entry"
        )
    figure = Figure(figsize=(4.2 * len(results), 4.0), layout="constrained")
    axes = figure.subplots(1, len(results), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (label, result) in zip(axes, results.items()):
        x = np.asarray(result["image_values"], dtype=np.float64)
        y = np.asarray(result["text_values"], dtype=np.float64)
        ax.scatter(x, y, s=3, color="tab:blue", alpha=0.35, linewidths=0, rasterized=True)
        slope, intercept = np.polyfit(x, y, 1) if x.std() > 0 else (0.0, float(y.mean()))
        line = np.linspace(x.min(), x.max(), 2)
        ax.plot(
            line,
            slope * line + intercept,
            color="tab:red",
            linewidth=1.8,
            label=f"Pearson r = {float(result['pearson']):.3f}",
        )
        ax.set_title(f"{label}\nMMD {float(result['mmd']):.4f}", fontsize=10)
        ax.set_xlabel("image feature value")
        ax.legend(fontsize=8, loc="upper left", frameon=False)
    axes[0].set_ylabel("text feature value (same coordinate, same pair)")
    return _save(figure, path)


# -- Fig. 6: patch-to-global correlation ------------------------------------------------


def patch_global_correlation(
    patch_tokens: Tensor, global_features: Tensor, grid: tuple[int, int] | None = None
) -> Tensor:
    """Cosine between each patch token and its image's global feature, on the patch grid.

    Args:
        patch_tokens: float [B, P, D] projected patch tokens (``encode_image``'s second
            output), row-major over the grid.
        global_features: float [B, D] projected CLS features.
        grid: (h, w) with h * w = P; ``None`` for a square grid.

    Returns:
        float [B, h, w] cosines in [-1, 1].
    """
    if (
        patch_tokens.ndim != 3
        or global_features.ndim != 2
        or (patch_tokens.shape[0], patch_tokens.shape[2]) != tuple(global_features.shape)
    ):
        raise ValueError(
            f"need patch_tokens [B, P, D] and global_features [B, D], got {tuple(patch_tokens.shape)} "
            f"and {tuple(global_features.shape)}"
        )
    num_patches = patch_tokens.shape[1]
    if grid is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(f"{num_patches} patches do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != num_patches:
        raise ValueError(f"grid {grid} does not hold {num_patches} patches")
    cosine = F.cosine_similarity(patch_tokens.float(), global_features.float()[:, None, :], dim=-1)
    return cosine.reshape(len(cosine), *grid)


def patch_view_labels(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Patch-level view masks: the majority foreground label of each patch.

    Args:
        masks: uint8 [B, H, W] view masks (0 background, 1 front, 2 back, 3 top, 4 side)
            at the network input size; H and W must be multiples of the grid.
        grid: (h, w) patch grid of the model.

    Returns:
        uint8 [B, h, w]; 0 where a patch holds no foreground pixel. Same rule as the
        patch-level view proportions (``viewcoop_core.views``).
    """
    masks = np.asarray(masks)
    height, width = masks.shape[1:]
    rows, cols = grid
    if height % rows or width % cols or height // rows != width // cols:
        raise ValueError(
            f"masks of size {height}x{width} cannot be cut into square patches on a {rows}x{cols} grid"
        )
    patch = height // rows
    return np.stack(
        [patch_majority_labels(m.astype(np.uint8), patch).reshape(rows, cols) for m in masks]
    ).astype(np.uint8)


def plot_patch_correlation(
    images: np.ndarray,
    heatmaps: Tensor | np.ndarray | Mapping[str, Tensor | np.ndarray],
    masks: np.ndarray | None,
    path: str | Path,
) -> Path:
    """Fig. 6: per image (columns), the image, one correlation heatmap per model, the
    view mask and the patch-level view mask (rows).

    Args:
        images: uint8 [B, H, W, 3] images as the network saw them (denormalised).
        heatmaps: float [B, h, w] from ``patch_global_correlation``, or label -> such an
            array for several models (e.g. initial vs trained, the paper's Baseline vs
            Ours); all share one jet colour scale.
        masks: uint8 [B, H, W] view masks at the image size, or ``None`` to leave the two
            mask rows out (datasets without masks for their query images).
        path: the PNG to write.
    """
    images = np.asarray(images)
    maps = (
        {"patch-global cosine": heatmaps} if not isinstance(heatmaps, Mapping) else dict(heatmaps)
    )
    maps = {
        label: np.asarray(torch.as_tensor(value).float().cpu()) for label, value in maps.items()
    }
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got shape {images.shape}")
    count, height, width = images.shape[:3]
    for label, value in maps.items():
        if value.ndim != 3 or len(value) != count:
            raise ValueError(f"heatmaps[{label!r}] must be [B={count}, h, w], got {value.shape}")
    if masks is not None and np.asarray(masks).shape != (count, height, width):
        raise ValueError(
            f"masks must be [B, H, W] = {(count, height, width)}, got {np.asarray(masks).shape}"
        )

    # (kind, row label, data): kind picks how a cell is drawn.
    rows = [("image", "image", images)] + [
        ("heatmap", label, value) for label, value in maps.items()
    ]
    if masks is not None:
        grid = next(iter(maps.values())).shape[1:]
        rows += [
            ("mask", "view mask", masks),
            ("mask", f"patch view mask ({grid[0]}x{grid[1]})", patch_view_labels(masks, grid)),
        ]
    low = min(float(v.min()) for v in maps.values())
    high = max(float(v.max()) for v in maps.values())

    figure = Figure(figsize=(1.7 * count + 1.6, 1.7 * len(rows) + 0.4), layout="constrained")
    axes = figure.subplots(len(rows), count, squeeze=False)
    extent = (0, width, height, 0)  # heatmaps and patch masks stretched over the image area
    heat_image = None
    for row, (kind, label, data) in enumerate(rows):
        for column in range(count):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "image":
                ax.imshow(data[column])
            elif kind == "heatmap":
                heat_image = ax.imshow(
                    data[column],
                    cmap="jet",
                    vmin=low,
                    vmax=high,
                    interpolation="nearest",
                    extent=extent,
                )
            else:
                ax.imshow(
                    data[column],
                    cmap=VIEW_CMAP,
                    vmin=0,
                    vmax=len(VIEW_COLOURS) - 1,
                    interpolation="nearest",
                    extent=extent,
                )
        axes[row, 0].set_ylabel(label, fontsize=8)
    figure.colorbar(
        heat_image, ax=axes[1 : 1 + len(maps)].ravel().tolist(), shrink=0.9, label="cosine"
    )
    if masks is not None:
        legend = [Patch(color=VIEW_COLOURS[MASK_LABELS[name]], label=name) for name in VIEW_NAMES]
        figure.legend(
            handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False
        )
    return _save(figure, path)


def denormalise_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network inputs float [B, 3, H, W] (normalised with mean/std) -> uint8 [B, H, W, 3]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device)[None, :, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device)[None, :, None, None]
    pixels = (images.float() * std_t + mean_t).clamp(0.0, 1.0).mul(255.0).round()
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    logger.info("wrote %s", path)
    return path
