"""A torch ``Dataset`` over ``ReidSample`` records."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from viewcoop_core.data.types import ReidSample

Transform = Callable[[Image.Image], torch.Tensor]


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def read_rgb(path: str) -> Image.Image:
    """The decoded image at ``path`` as RGB; ``ImageReadError`` naming the file otherwise.

    The pre-flight (``data.preflight``) checks headers and end markers, not every
    pixel, so a file damaged in the middle, or after the check, fails here: PIL's own
    message ("image file is truncated") names no file, and inside a DataLoader worker
    nothing else would.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "cannot decode"
        raise ImageReadError(
            f"cannot decode image {path}: {exc}. Replace or remove the file; the pre-flight "
            "check before a run skips unreadable training images and stops on unreadable "
            "query/gallery images"
        ) from exc


def pil_to_float_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``float32[3, H, W]`` in [0, 1]."""
    array = np.array(image, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(Dataset):
    """Images of ``samples`` with their identity and camera.

    ``transform`` maps an RGB PIL image to ``float[3, H, W]``; without one the
    image is returned at its own size, scaled to [0, 1]. ``index`` is the sample's
    position in ``samples`` so that features extracted in shards can be put back
    in dataset order.
    """

    def __init__(self, samples: Sequence[ReidSample], transform: Transform | None = None):
        self.samples = list(samples)
        self.transform = transform if transform is not None else pil_to_float_tensor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        sample = self.samples[index]
        rgb = read_rgb(sample.path)
        return {
            "image": self.transform(rgb),
            "index": index,
            "pid": sample.pid,
            "camid": sample.camid,
        }
