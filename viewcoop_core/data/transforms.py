"""Image transforms for training and feature extraction (torchvision.transforms.v2).

Both take an RGB ``PIL.Image`` and return a [3, height, width] float32 tensor
normalised with the backbone's mean and std (CLIP's come from the model's
preprocessing config, so they are arguments, not constants here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """PIL image -> [3, H, W] float32 in [0, 1] -> (x - mean) / std."""
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def build_train_transform(
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    pad: int = 10,
    flip_p: float = 0.5,
    erase_p: float = 0.5,
    crop_p: float = 0.5,
) -> v2.Compose:
    """Augmentation of the paper: random crop (after padding), flip, random erasing, each
    with probability 0.5 ("each with a 0.5 probability").

    Resize(image_size, bicubic) -> RandomHorizontalFlip(flip_p) -> with probability
    crop_p: Pad(pad, zeros) + RandomCrop(image_size) -> float tensor ->
    Normalize(mean, std) -> RandomErasing(erase_p, value=0).

    The erased rectangle is filled with 0 after normalisation, i.e. with the
    normalisation mean colour: a neutral occluder that does not add the high-contrast
    noise of random values, and the same value for every erased image. The paper says
    "random erasure ... with a 0.5 probability" and nothing about the fill value.

    Args:
        image_size: (height, width) of the output.
        mean, std: per-channel normalisation, 3 values each.
        pad: pixels of zero padding on every side before the random crop; 0 disables
            the crop's translation.
        flip_p, erase_p, crop_p: probabilities of the horizontal flip, the erasing and
            the padded random crop.

    Returns:
        A callable mapping an RGB PIL image to a [3, height, width] float32 tensor.
        Randomness comes from torch's global generator (seed DataLoader workers).
    """
    size = list(image_size)
    return v2.Compose(
        [
            v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=flip_p),
            v2.RandomApply([v2.Pad(pad, fill=0), v2.RandomCrop(size)], p=crop_p),
            *_to_normalised_tensor(mean, std),
            v2.RandomErasing(p=erase_p, value=0.0),
        ]
    )


def build_test_transform(
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Compose:
    """Deterministic transform for feature extraction: Resize(bicubic) -> tensor -> Normalize.

    Args:
        image_size: (height, width) of the output.
        mean, std: per-channel normalisation, 3 values each.

    Returns:
        A callable mapping an RGB PIL image to a [3, height, width] float32 tensor.
    """
    return v2.Compose(
        [
            v2.Resize(list(image_size), interpolation=InterpolationMode.BICUBIC, antialias=True),
            *_to_normalised_tensor(mean, std),
        ]
    )
