"""Fig. 5, image-text discrepancy.

The maximum mean discrepancy (MMD) between the image and the text feature
distributions, and a scatter of the image against the text value of the same feature
coordinate for matched (image, prompt) pairs with its Pearson correlation, once with
the text encoder trained and once without.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.nn import functional as F

from viewcoop_core.figures.saving import save_figure


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
    return save_figure(figure, path)


# -- Fig. 6: patch-to-global correlation ------------------------------------------------
