"""Batched camera-like augmentation of decoded images, as tensor operations.

Pretraining draws thousands of small augmented batches; per-image PIL transforms would
spend most of the time there. Here a whole batch of uint8 images [B, 3, H, W] is
augmented at once on its device: random resized crop and horizontal flip (one affine
grid per image), brightness / contrast / saturation jitter, a Gaussian blur and random
erasing, then normalisation. Hue is never changed: a vehicle's colour is its identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CameraAugment:
    """The strengths of each change; ``probability`` says how often each applies."""

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    jitter_p: float = 0.8
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    blur_p: float = 0.3
    erase_p: float = 0.25

    def __call__(
        self,
        images: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """uint8 [B, 3, H, W] -> augmented, normalised float32 [B, 3, H, W]."""
        x = images.float().div_(255.0)
        x = self._crop_and_flip(x, generator)
        x = self._jitter(x, generator)
        x = self._blur(x, generator)
        mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean_t) / std_t
        return self._erase(x, generator)

    def _uniform(self, batch: int, low: float, high: float, generator, device) -> Tensor:
        return torch.rand(batch, generator=generator, device=device) * (high - low) + low

    def _crop_and_flip(self, x: Tensor, generator) -> Tensor:
        """RandomResizedCrop + horizontal flip as one affine sampling grid per image."""
        b, device = x.shape[0], x.device
        area = self._uniform(b, *self.crop_scale, generator, device)
        log_ratio = self._uniform(
            b, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator, device
        )
        ratio = log_ratio.exp()
        width = (area * ratio).sqrt().clamp(max=1.0)
        height = (area / ratio).sqrt().clamp(max=1.0)
        centre_x = self._uniform(b, -1.0, 1.0, generator, device) * (1.0 - width)
        centre_y = self._uniform(b, -1.0, 1.0, generator, device) * (1.0 - height)
        flip = torch.where(torch.rand(b, generator=generator, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = width * flip
        theta[:, 0, 2] = centre_x
        theta[:, 1, 1] = height
        theta[:, 1, 2] = centre_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: Tensor, generator) -> Tensor:
        b, device = x.shape[0], x.device
        apply = (torch.rand(b, generator=generator, device=device) < self.jitter_p).float()

        def factor(strength: float) -> Tensor:
            f = self._uniform(b, 1 - strength, 1 + strength, generator, device)
            return (1 + apply * (f - 1)).view(b, 1, 1, 1)

        x = x * factor(self.brightness)
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = grey.mean((2, 3), keepdim=True) + factor(self.contrast) * (
            x - grey.mean((2, 3), keepdim=True)
        )
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = grey + factor(self.saturation) * (x - grey)
        return x.clamp_(0.0, 1.0)

    def _blur(self, x: Tensor, generator) -> Tensor:
        """Separable Gaussian blur with a per-image sigma (5-tap kernels)."""
        b, device = x.shape[0], x.device
        apply = torch.rand(b, generator=generator, device=device) < self.blur_p
        if not bool(apply.any()):
            return x
        sigma = self._uniform(b, *self.blur_sigma, generator, device)
        taps = torch.arange(-2, 3, device=device, dtype=x.dtype)
        kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)  # [B, 5]
        blurred = x[apply]
        k = kernel[apply]
        n, c, h, w = blurred.shape
        flat = blurred.reshape(1, n * c, h, w)
        kx = k.repeat_interleave(c, 0).view(n * c, 1, 1, 5)
        ky = k.repeat_interleave(c, 0).view(n * c, 1, 5, 1)
        flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kx, groups=n * c)
        flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), ky, groups=n * c)
        out = x.clone()
        out[apply] = flat.view(n, c, h, w)
        return out

    def _erase(self, x: Tensor, generator) -> Tensor:
        """Random erasing (area 2-33%, aspect 0.3-3.3), filled with 0 after normalisation."""
        b, _, h, w = x.shape
        device = x.device
        apply = torch.rand(b, generator=generator, device=device) < self.erase_p
        area = self._uniform(b, 0.02, 0.33, generator, device) * h * w
        ratio = self._uniform(b, math.log(0.3), math.log(3.3), generator, device).exp()
        eh = (area * ratio).sqrt().clamp(max=h)
        ew = (area / ratio).sqrt().clamp(max=w)
        top = self._uniform(b, 0, 1, generator, device) * (h - eh)
        left = self._uniform(b, 0, 1, generator, device) * (w - ew)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        inside = (
            (rows >= top.view(b, 1, 1))
            & (rows < (top + eh).view(b, 1, 1))
            & (cols >= left.view(b, 1, 1))
            & (cols < (left + ew).view(b, 1, 1))
            & apply.view(b, 1, 1)
        )
        return x.masked_fill(inside.unsqueeze(1), 0.0)
