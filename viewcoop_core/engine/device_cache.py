"""Decoded images cached as uint8 on the device, augmented there in whole batches.

A GPU trains ViT-B/16 at 256 on ~1,500-2,500 images/s; a 2-core host decodes and
augments ~200 JPEGs/s. ``DeviceImageCache`` decodes (and resizes) every image once,
keeps them as ``uint8[N, 3, H, W]`` on the device (N x 3 x H x W bytes: 7.4 GB for
VeRi-776's training set at 256), and serves batches that are normalised and, for
training, augmented on the device with the paper's augmentation, batched:

    flip (p) -> zero pad + random crop (p) -> to float, normalise -> random erasing (p)

the same steps and parameter distributions as ``data.transforms.build_train_transform``
(the erased rectangle as torchvision's ``RandomErasing`` draws it, filled with 0 after
normalisation). The evaluation path equals ``build_test_transform`` exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from viewcoop_core.data.sampler import PKSampler
from viewcoop_core.data.types import ReidSample

logger = logging.getLogger(__name__)

# torchvision RandomErasing defaults: area share and aspect ratio of the rectangle.
_ERASE_SCALE = (0.02, 0.33)
_ERASE_RATIO = (0.3, 3.3)
_ERASE_ATTEMPTS = 10


def decode_resized(path: str, size: tuple[int, int]) -> Tensor:
    """uint8 [3, H, W]: the file, RGB, resized as the transforms resize (bicubic, antialias)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    resized = TF.resize(rgb, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.pil_to_tensor(resized)


class DeviceImageCache:
    """Every image of ``samples`` decoded once, uint8 on ``device``; batches by index.

    Args:
        samples: the images, in the order their indices refer to.
        size: (H, W) of the cached images (the model's input size).
        mean, std: per-channel normalisation (the backbone's).
        device: where the cache lives and batches are made.
    """

    def __init__(
        self,
        samples: Sequence[ReidSample],
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
    ) -> None:
        self.samples = list(samples)
        self.size = tuple(size)
        self.device = device
        self.images = torch.empty(
            (len(self.samples), 3, *self.size), dtype=torch.uint8, device=device
        )
        for start in range(0, len(self.samples), 256):
            chunk = [decode_resized(s.path, self.size) for s in self.samples[start : start + 256]]
            self.images[start : start + len(chunk)] = torch.stack(chunk).to(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        logger.info(
            "device image cache: %d images at %dx%d on %s (%.2f GB)",
            len(self.samples),
            *self.size,
            device,
            self.images.numel() / 1e9,
        )

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] -> float32 (x / 255 - mean) / std, as ToDtype + Normalize."""
        return (images.float() / 255.0 - self.mean) / self.std

    def test_batch(self, index: Tensor) -> dict[str, Tensor]:
        """The evaluation batch of ``index`` (CPU int64): no augmentation."""
        images = self.images.index_select(0, index.to(self.device))
        return {"index": index, "image": self.normalise(images)}

    def train_batch(
        self,
        index: Tensor,
        generator: torch.Generator,
        pad: int = 10,
        flip_p: float = 0.5,
        erase_p: float = 0.5,
        crop_p: float = 0.5,
    ) -> dict[str, Tensor]:
        """The augmented training batch of ``index``; randomness from ``generator``
        (a generator on the cache's device). The probabilities are
        ``build_train_transform``'s."""
        images = self.images.index_select(0, index.to(self.device))
        images = random_flip(images, flip_p, generator)
        images = random_crop(images, pad, generator, crop_p)
        images = random_erase(self.normalise(images), erase_p, generator)
        return {"index": index, "image": images}

    def batches(
        self, batch_size: int, indices: Sequence[int] | None = None
    ) -> Iterator[dict[str, Tensor]]:
        """Evaluation batches of all images in order, or of ``indices`` (e.g. a worker's
        shard; batch["index"] holds them, as a loader over a ``Subset`` would): a loader
        for ``extract_features``."""
        order = torch.arange(len(self.samples)) if indices is None else torch.as_tensor(indices)
        for start in range(0, len(order), batch_size):
            yield self.test_batch(order[start : start + batch_size].long())

    def loader_for(self, samples: Sequence[ReidSample], batch_size: int) -> Iterable[dict]:
        """Evaluation batches of ``samples`` (all of them in this cache), by path."""
        position = {s.path: i for i, s in enumerate(self.samples)}
        index = torch.tensor([position[s.path] for s in samples], dtype=torch.int64)
        for start in range(0, len(index), batch_size):
            batch = self.test_batch(index[start : start + batch_size])
            # Indices relative to ``samples``, as a loader over ``samples`` would give.
            batch["index"] = torch.arange(start, start + len(batch["image"]))
            yield batch


class ImageCaches:
    """A run's decoded-image caches (``train.device_cache``): the training images and the
    test images (VeRi query + gallery, or VehicleID's test list), each decoded on first
    use, so a rank that never evaluates never decodes the test set."""

    def __init__(
        self,
        dataset,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
    ) -> None:
        self.dataset, self.size, self.mean, self.std, self.device = dataset, size, mean, std, device
        self._train: DeviceImageCache | None = None
        self._test: DeviceImageCache | None = None

    @property
    def train(self) -> DeviceImageCache:
        if self._train is None:
            self._train = DeviceImageCache(
                self.dataset.train, self.size, self.mean, self.std, self.device
            )
        return self._train

    @property
    def test(self) -> DeviceImageCache:
        if self._test is None:
            samples = (
                self.dataset.test
                if self.dataset.protocol == "vehicleid"
                else [*self.dataset.query, *self.dataset.gallery]
            )
            self._test = DeviceImageCache(samples, self.size, self.mean, self.std, self.device)
        return self._test


def pk_batches(
    cache: DeviceImageCache,
    labels: np.ndarray,
    batch_size: int,
    num_instances: int,
    num_iters: int,
    seed: int,
    epoch: int,
    crop_p: float = 0.5,
) -> Iterator[dict[str, Tensor]]:
    """``train.pk_loader``'s P x K batches, made on the device from the cache."""
    sampler = PKSampler(
        labels.tolist(),
        [s.camid for s in cache.samples],
        batch_size=batch_size,
        num_instances=num_instances,
        num_iters=num_iters,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    generator = torch.Generator(device=cache.device)
    generator.manual_seed(seed * 100_003 + epoch)
    for index in sampler:
        yield cache.train_batch(torch.as_tensor(index, dtype=torch.int64), generator, crop_p=crop_p)


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device)


def random_flip(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Each image mirrored left-right with probability p."""
    flip = _uniform(images.shape[0], generator, images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_crop(images: Tensor, pad: int, generator: torch.Generator, p: float = 1.0) -> Tensor:
    """With probability ``p`` per image: zero-pad by ``pad`` on every side, then crop
    H x W at a uniform offset; the other images stay as they are (offset ``pad``)."""
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    kept = _uniform(b, generator, images.device) >= p
    dy, dx = dy.masked_fill(kept, pad), dx.masked_fill(kept, pad)
    rows = (dy[:, None] + torch.arange(h, device=images.device)).view(b, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def random_erase(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """With probability p per image, one rectangle set to 0, drawn as torchvision does:
    area share in [0.02, 0.33], log-uniform aspect ratio in [0.3, 3.3], the first of 10
    tries that fits; none if none fits."""
    b, _, h, w = images.shape
    device = images.device
    area = h * w
    tries = (b, _ERASE_ATTEMPTS)
    share = _ERASE_SCALE[0] + (_ERASE_SCALE[1] - _ERASE_SCALE[0]) * torch.rand(
        tries, generator=generator, device=device
    )
    log_low, log_high = math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1])
    ratio = torch.exp(
        log_low + (log_high - log_low) * torch.rand(tries, generator=generator, device=device)
    )
    eh = torch.sqrt(area * share * ratio).round().long()
    ew = torch.sqrt(area * share / ratio).round().long()
    fits = (eh < h) & (ew < w)
    chosen = torch.where(fits.any(1), fits.float().argmax(1), 0)
    eh = eh.gather(1, chosen[:, None]).squeeze(1)
    ew = ew.gather(1, chosen[:, None]).squeeze(1)
    top = (torch.rand(b, generator=generator, device=device) * (h - eh + 1).clamp_min(1)).long()
    left = (torch.rand(b, generator=generator, device=device) * (w - ew + 1).clamp_min(1)).long()
    erase = (_uniform(b, generator, device) < p) & fits.any(1)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (
        (ys >= top.view(b, 1, 1))
        & (ys < (top + eh).view(b, 1, 1))
        & (xs >= left.view(b, 1, 1))
        & (xs < (left + ew).view(b, 1, 1))
        & erase.view(b, 1, 1)
    )
    return images.masked_fill(inside.unsqueeze(1), 0.0)
