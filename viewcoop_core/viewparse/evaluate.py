"""How good predicted view masks are: per-class IoU and the error of the derived view ratios.

IoU is accumulated over all pixels of the set (intersection and union summed over images,
then divided), per class; ``mean_iou`` averages the four view classes (background left
out: it is large and easy). The ratio error is what the ViewCoOp prompt feels: for each
image the view proportions (``views.view_ratios``, patch-level at 8/16/32 px or pixel,
on the mask resized to the network input) of the predicted and of the true mask, and the
mean absolute difference over images and the four views.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from viewcoop_core.viewparse.checkpoint import load_parser
from viewcoop_core.viewparse.files import batched, paired_files, read_pair
from viewcoop_core.viewparse.inference import predict_images
from viewcoop_core.views import view_ratios
from viewcoop_core.vocabulary import MASK_LABELS, NUM_MASK_LABELS, PATCH_SIZES, VIEW_MASK_VALUES

logger = logging.getLogger(__name__)

RATIO_MODES: tuple[int | None, ...] = (*PATCH_SIZES, None)
"""Patch sizes of the ratio error; None is pixel mode."""


def ratio_mode_name(patch_size: int | None) -> str:
    return "pixel" if patch_size is None else f"patch{patch_size}"


@dataclass
class MaskScores:
    """Running sums over (predicted, true) mask pairs; ``summary()`` gives the figures."""

    ratio_image_size: int = 256
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(NUM_MASK_LABELS))
    union: np.ndarray = field(default_factory=lambda: np.zeros(NUM_MASK_LABELS))
    ratio_error: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """One pair of uint8[H, W] masks of the same image."""
        if predicted.shape != truth.shape:
            raise ValueError(f"mask shapes differ: {predicted.shape} vs {truth.shape}")
        for label in range(NUM_MASK_LABELS):
            pred, true = predicted == label, truth == label
            self.intersection[label] += np.count_nonzero(pred & true)
            self.union[label] += np.count_nonzero(pred | true)
        size = (self.ratio_image_size, self.ratio_image_size)
        for patch in RATIO_MODES:
            error = np.abs(view_ratios(predicted, patch, size) - view_ratios(truth, patch, size))
            name = ratio_mode_name(patch)
            self.ratio_error[name] = self.ratio_error.get(name, 0.0) + float(error.mean())
        self.count += 1

    def summary(self) -> dict[str, float]:
        """``iou_<class>`` for the 5 classes, ``mean_iou`` over the 4 views, ``ratio_mae_<mode>``
        for patch8/16/32 and pixel, ``num_images``. A class absent from both sides has IoU nan."""
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = self.intersection / self.union
        scores = {
            f"iou_{MASK_LABELS[label]}": float(iou[label]) for label in range(NUM_MASK_LABELS)
        }
        scores["mean_iou"] = float(np.nanmean(iou[list(VIEW_MASK_VALUES)]))
        for name, total in self.ratio_error.items():
            scores[f"ratio_mae_{name}"] = total / max(self.count, 1)
        scores["num_images"] = float(self.count)
        return scores


def score_masks(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], ratio_image_size: int = 256
) -> dict[str, float]:
    """Scores of (predicted, true) uint8[H, W] mask pairs; see ``MaskScores.summary``."""
    scores = MaskScores(ratio_image_size=ratio_image_size)
    for predicted, truth in pairs:
        scores.add(predicted, truth)
    return scores.summary()


def evaluate_parser(
    image_dirs: Sequence[str | os.PathLike[str]],
    masks_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    ratio_image_size: int = 256,
    num_threads: int = 4,
    flip: bool = True,
) -> dict[str, float]:
    """Predict the masks of every image of ``image_dirs`` with a true mask in ``masks_dir``
    (``flip``: averaged with the mirror image, as ``predict`` does by default) and score
    them against it (``MaskScores.summary``)."""
    model, _ = load_parser(checkpoint, device)
    pairs = paired_files(image_dirs, masks_dir)
    scores = MaskScores(ratio_image_size=ratio_image_size)
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for chunk in batched(pairs, batch_size):
            loaded = list(pool.map(lambda pair: read_pair(*pair), chunk))
            predicted = predict_images(model, [image for image, _ in loaded], flip)
            for mask, (_, truth) in zip(predicted, loaded):
                scores.add(mask, truth)
    summary = scores.summary()
    logger.info(
        "parser %s%s on %d images of %s: mean IoU %.3f, ratio MAE %.4f at 16 px",
        Path(checkpoint).name,
        " (flip-averaged)" if flip else "",
        scores.count,
        masks_dir,
        summary["mean_iou"],
        summary["ratio_mae_patch16"],
    )
    return summary
