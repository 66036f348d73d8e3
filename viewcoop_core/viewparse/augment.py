"""Batch augmentation for parser training: geometry shared by image and mask, looks on the image.

The parser must work under cameras it never saw (other light, colour cast, blur,
resolution, framing), so training varies exactly those. Horizontal flips keep every
label: front, back, top and side do not depend on left and right.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def random_geometry(
    images: Tensor, masks: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random scale, shift, small rotation and horizontal flip, the same for image and mask.

    images float[B, 3, S, S] in [0, 1]; masks int64[B, S, S]. Image bilinear, mask nearest,
    both reflected at the borders so that the pair stays consistent.
    """
    batch = images.shape[0]
    scale = _uniform((batch,), 0.8, 1.25, generator)
    angle = _uniform((batch,), -10.0, 10.0, generator) * math.pi / 180
    shift = _uniform((batch, 2), -0.12, 0.12, generator)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    masks = F.grid_sample(
        masks[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
    )
    return images, masks[:, 0].long()


def random_look(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random brightness, contrast, saturation, colour cast, resolution loss, blur and noise.

    images float[B, 3, S, S] in [0, 1] -> the same shape, clamped to [0, 1].
    """
    batch, _, size, _ = images.shape
    grey = (images * _GREY).sum(dim=1, keepdim=True)
    saturation = _uniform((batch, 1, 1, 1), 0.4, 1.5, generator)
    images = grey + (images - grey) * saturation
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform((batch, 1, 1, 1), 0.6, 1.4, generator)
    brightness = _uniform((batch, 1, 1, 1), 0.6, 1.4, generator)
    cast = _uniform((batch, 3, 1, 1), 0.85, 1.15, generator)
    images = ((images - mean) * contrast + mean) * brightness * cast
    # Resolution loss: shrink and enlarge back (one factor per batch keeps it one call).
    factor = float(_uniform((1,), 0.35, 1.0, generator))
    small = max(8, int(size * factor))
    if small < size:
        images = F.interpolate(images, size=(small, small), mode="bilinear", antialias=True)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = _random_blur(images, generator)
    noise = _uniform((batch, 1, 1, 1), 0.0, 0.05, generator)
    images = images + torch.randn(images.shape, generator=generator) * noise
    return images.clamp(0.0, 1.0)


def _random_blur(images: Tensor, generator: torch.Generator) -> Tensor:
    """Separable Gaussian blur with a per-image sigma in [0, 1.5] px (5-tap kernel)."""
    batch = images.shape[0]
    sigma = _uniform((batch, 1), 0.05, 1.5, generator)
    taps = torch.arange(-2, 3, dtype=images.dtype).view(1, 5)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, 5]
    channels = images.shape[1]
    weight = kernel.repeat_interleave(channels, dim=0)  # [B*C, 5]
    flat = images.reshape(1, batch * channels, *images.shape[-2:])
    flat = F.conv2d(
        F.pad(flat, (2, 2, 0, 0), mode="reflect"), weight.view(-1, 1, 1, 5), groups=batch * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, 2, 2), mode="reflect"), weight.view(-1, 1, 5, 1), groups=batch * channels
    )
    return flat.view_as(images)


def augment_batch(
    images: Tensor, masks: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """uint8[B, 3, S, S] images and uint8[B, S, S] masks -> float [0, 1] images, int64 masks."""
    images = images.float() / 255.0
    images, masks = random_geometry(images, masks.long(), generator)
    return random_look(images, generator), masks
