"""Fig. 6, patch-to-global correlation.

Cosine between every projected patch token and the projected CLS feature on the patch
grid (jet colour map), next to the image, its view mask and the patch-level view mask at
the model's patch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor
from torch.nn import functional as F

from viewcoop_core.figures.saving import save_figure

# The patch-level view mask must follow exactly the rule of the patch-level view
# proportions, so the figure reuses that module's helper instead of restating it.
from viewcoop_core.views import patch_majority_labels
from viewcoop_core.vocabulary import MASK_VALUE, VIEW_NAMES

# Index = mask label (0 background, 1 front, 2 back, 3 top, 4 side).
VIEW_COLOURS: tuple[str, ...] = ("#202020", "#d62728", "#1f77b4", "#2ca02c", "#ffbf00")
VIEW_CMAP = ListedColormap(VIEW_COLOURS, name="views")


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
        legend = [Patch(color=VIEW_COLOURS[MASK_VALUE[name]], label=name) for name in VIEW_NAMES]
        figure.legend(
            handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False
        )
    return save_figure(figure, path)


def denormalise_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network inputs float [B, 3, H, W] (normalised with mean/std) -> uint8 [B, H, W, 3]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device)[None, :, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device)[None, :, None, None]
    pixels = (images.float() * std_t + mean_t).clamp(0.0, 1.0).mul(255.0).round()
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
