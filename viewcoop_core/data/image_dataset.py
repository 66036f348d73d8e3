"""A torch ``Dataset`` over ``ReidSample`` records."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from viewcoop_core.data.types import ReidSample

Transform = Callable[[Image.Image], torch.Tensor]


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
        with Image.open(sample.path) as image:
            rgb = image.convert("RGB")
        return {
            "image": self.transform(rgb),
            "index": index,
            "pid": sample.pid,
            "camid": sample.camid,
        }
