"""View proportions of a vehicle image from its view mask (paper Eq. 1).

A view mask is a single-channel image whose values label each pixel:
0 background, 1 front, 2 back, 3 top, 4 side (``vocabulary.MASK_LABELS``). The ViewCoOp prompt
names the views in the order front, back, side, top (``vocabulary.VIEW_NAMES``); every array
returned here uses that column order, which is NOT the label order.

Patch-level proportion for patch size ``s`` (paper Table 4, "Patch-level (s x s)"):
the mask, resized to the network input size, is cut into ``s x s``-pixel patches;
each patch takes the majority view among its foreground pixels; the proportion of a
view is its number of patches over the number of foreground patches. ``pixel`` mode
counts pixels instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from viewcoop_core.arrays import as_numpy
from viewcoop_core.data.masks import load_mask
from viewcoop_core.vocabulary import (
    MASK_LABELS,
    NUM_MASK_LABELS,
    PATCH_SIZES,
    VIEW_MASK_VALUES,
    VIEW_NAMES,
)

logger = logging.getLogger(__name__)

# Mask value of each output column, so that counts_by_value[_VIEW_COLUMN_VALUES] is in VIEW_NAMES order.
_VIEW_COLUMN_VALUES = np.array(VIEW_MASK_VALUES, dtype=np.int64)

EMPTY_MASK_RATIOS = np.full(len(VIEW_NAMES), 1.0 / len(VIEW_NAMES), dtype=np.float64)
"""Proportions used for a mask without any foreground pixel: no view is preferred."""


def parse_patch_size(value: object) -> int | None:
    """Read a config value for the view-ratio granularity.

    Accepts the ints 8, 16, 32, their string forms ("16"), and "pixel" (any case) or
    ``None`` for pixel mode, which is returned as ``None``.
    """
    allowed = f"one of {list(PATCH_SIZES)} or 'pixel'"
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "pixel":
            return None
        if text.isdigit() and int(text) in PATCH_SIZES:
            return int(text)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in PATCH_SIZES:
            return int(value)
    raise ValueError(f"view ratio patch_size must be {allowed}, got {value!r}")


def resize_mask(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize a label mask to ``image_size`` = (height, width) with nearest neighbour.

    Nearest keeps labels intact (no blended values between two views). ``mask`` is
    [H0, W0] integer with values in 0..255; returns [height, width] uint8 (the input
    itself, as uint8, when it already has that size).
    """
    height, width = image_size
    mask = np.asarray(mask)
    if mask.shape == (height, width):
        return mask.astype(np.uint8, copy=False)
    # PIL sizes are (width, height).
    resized = Image.fromarray(mask.astype(np.uint8, copy=False)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.asarray(resized, dtype=np.uint8)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = as_numpy(mask, "mask")
    if mask.ndim != 2:
        raise ValueError(
            f"a view mask must be single-channel [H, W], got an array of shape {mask.shape}"
        )
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a view mask must hold integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_MASK_LABELS):
        raise ValueError(
            f"view mask values must be in 0..{NUM_MASK_LABELS - 1} ({MASK_LABELS}), "
            f"found values in {int(mask.min())}..{int(mask.max())}"
        )
    return mask


def patch_majority_labels(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Majority foreground label of each ``patch_size`` x ``patch_size`` patch.

    ``mask`` is [H, W] uint8 with H and W multiples of ``patch_size``. Returns
    [H/s * W/s] int64, 0 for a patch without foreground pixels. Ties between views
    go to the smallest label value (argmax returns the first maximum), so the result
    is deterministic and independent of the pixel layout inside the patch.
    """
    height, width = mask.shape
    rows, cols = height // patch_size, width // patch_size
    # [rows, s, cols, s] -> [rows, cols, s, s] -> one row of s*s pixels per patch.
    patches = mask.reshape(rows, patch_size, cols, patch_size).transpose(0, 2, 1, 3)
    patches = patches.reshape(rows * cols, patch_size * patch_size).astype(np.int64)
    # Per-patch label histogram with one bincount: bin = patch * NUM_MASK_LABELS + label.
    offsets = np.arange(rows * cols, dtype=np.int64)[:, None] * NUM_MASK_LABELS
    histogram = np.bincount(
        (patches + offsets).ravel(), minlength=rows * cols * NUM_MASK_LABELS
    ).reshape(rows * cols, NUM_MASK_LABELS)
    foreground = histogram[:, 1:]
    majority = foreground.argmax(axis=1) + 1
    return np.where(foreground.any(axis=1), majority, 0)


def view_counts(
    mask: np.ndarray,
    patch_size: int | None,
    image_size: tuple[int, int] = (256, 256),
) -> np.ndarray:
    """Number of patches (or pixels) of each view, the numerator of Eq. (1).

    Args:
        mask: [H0, W0] integer view mask, values 0..4 (see ``vocabulary.MASK_LABELS``).
        patch_size: side of the square pixel patches; must divide both sides of
            ``image_size``. ``None`` counts pixels.
        image_size: (height, width) the mask is resized to first (nearest), so the
            patches line up with the network input.

    Returns:
        [4] int64 counts in ``VIEW_NAMES`` order (front, back, side, top).
    """
    mask = resize_mask(_check_mask(mask), image_size)
    if patch_size is None:
        labels = mask.ravel()
    else:
        if patch_size <= 0 or image_size[0] % patch_size or image_size[1] % patch_size:
            raise ValueError(
                f"patch_size {patch_size} must be a positive divisor of both sides of "
                f"image_size {tuple(image_size)}; use one of {list(PATCH_SIZES)} "
                "with a matching image size, or None for pixel mode"
            )
        labels = patch_majority_labels(mask, patch_size)
    return np.bincount(labels, minlength=NUM_MASK_LABELS)[_VIEW_COLUMN_VALUES].astype(np.int64)


def counts_to_ratios(counts: np.ndarray) -> np.ndarray:
    """Normalise [..., 4] view counts to proportions, float64.

    Rows without any foreground get ``EMPTY_MASK_RATIOS`` (0.25 each): the prompt
    still needs four numbers, and a uniform split states no view preference.
    """
    counts = as_numpy(counts, "counts").astype(np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    empty = totals == 0
    ratios = counts / np.where(empty, 1.0, totals)
    return np.where(empty, EMPTY_MASK_RATIOS, ratios)


def view_ratios(
    mask: np.ndarray,
    patch_size: int | None,
    image_size: tuple[int, int] = (256, 256),
) -> np.ndarray:
    """View proportions of one mask (Eq. 1 without the word embedding and bias).

    Args:
        mask: [H0, W0] integer view mask, values 0..4.
        patch_size: patch side in pixels (8, 16, 32 in the paper), or ``None`` for
            pixel mode. See ``view_counts``.
        image_size: (height, width) the mask is resized to (nearest) before counting.

    Returns:
        [4] float64 in ``VIEW_NAMES`` order, summing to 1. A mask without foreground
        returns 0.25 each (logged at debug level).
    """
    counts = view_counts(mask, patch_size, image_size)
    if counts.sum() == 0:
        logger.debug("view mask has no foreground pixel; using uniform view ratios")
    return counts_to_ratios(counts)


def ratios_to_percent(ratios: np.ndarray) -> np.ndarray:
    """Whole percents for the prompt text, each row summing to exactly 100.

    Uses largest-remainder rounding: floor every percent, then give the missing
    points to the largest fractional parts (ties to the earlier column). Plain
    rounding can give 99 or 101 (e.g. 1/3 each); the sentence describes one whole
    vehicle, so its proportions should add up to 100. The result differs from
    round-half-up in as few entries as any 100-summing rounding can.

    Args:
        ratios: [..., 4] non-negative proportions, each row summing to 1.

    Returns:
        [..., 4] int64.
    """
    ratios = as_numpy(ratios, "ratios").astype(np.float64)
    if ratios.ndim == 0 or ratios.shape[-1] != len(VIEW_NAMES):
        raise ValueError(f"ratios must have shape [..., {len(VIEW_NAMES)}], got {ratios.shape}")
    if not np.all(np.isfinite(ratios)) or np.any(ratios < 0):
        raise ValueError("ratios must be finite and non-negative")
    row_sums = ratios.sum(axis=-1, keepdims=True)
    if not np.allclose(row_sums, 1.0, atol=1e-4):
        raise ValueError(
            "each row of ratios must sum to 1 (view proportions, not counts); "
            f"row sums range over [{row_sums.min():.6g}, {row_sums.max():.6g}]"
        )
    # Rounding to 9 decimals removes float noise such as 0.29 * 100 = 28.999999999999996,
    # which would otherwise floor to 28 and compete for the missing points.
    scaled = np.round(ratios / row_sums * 100.0, 9)
    floors = np.floor(scaled)
    missing = (100 - floors.sum(axis=-1, keepdims=True)).astype(np.int64)
    # Rank of each column by descending remainder; a stable sort keeps ties in column order.
    order = np.argsort(-(scaled - floors), axis=-1, kind="stable")
    rank = np.argsort(order, axis=-1, kind="stable")
    return floors.astype(np.int64) + (rank < missing).astype(np.int64)


def compute_view_ratios(
    mask_paths: Sequence[str],
    patch_size: int | None,
    image_size: tuple[int, int] = (256, 256),
    num_workers: int = 0,
) -> np.ndarray:
    """View proportions of a whole dataset from its mask files.

    Args:
        mask_paths: N paths to single-channel PNG masks (values 0..4).
        patch_size: patch side in pixels, or ``None`` for pixel mode.
        image_size: (height, width) every mask is resized to before counting.
        num_workers: threads reading and counting masks (PIL decoding releases the
            GIL); 0 reads them in the calling thread.

    Returns:
        [N, 4] float32 in ``VIEW_NAMES`` order; rows of masks without foreground are
        0.25 each.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")

    def counts_of(path: str) -> np.ndarray:
        return view_counts(load_mask(path), patch_size, image_size)

    if num_workers == 0:
        counts = [counts_of(path) for path in mask_paths]
    else:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            counts = list(pool.map(counts_of, mask_paths))
    if not counts:
        return np.zeros((0, len(VIEW_NAMES)), dtype=np.float32)
    counts_array = np.stack(counts)
    num_empty = int((counts_array.sum(axis=1) == 0).sum())
    if num_empty:
        logger.info(
            "%d of %d view masks have no foreground; they get uniform view ratios",
            num_empty,
            len(counts),
        )
    return counts_to_ratios(counts_array).astype(np.float32)
