"""Masks from a trained parser for a batch of images of any sizes.

Images are resized to the parser's input size, the logits resized back to each image's
own size (bilinear) and arg-maxed there, so a mask is the size of its image and its
borders are not the input grid's staircase.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from viewcoop_core.viewparse.files import resized_rgb
from viewcoop_core.viewparse.model import ViewParserNet


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """RGB PIL image -> uint8[3, size, size], the parser's input."""
    return resized_rgb(image, size).transpose(2, 0, 1)


def images_to_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """RGB PIL images -> uint8[B, 3, size, size]."""
    return torch.from_numpy(np.stack([model_input(image, size) for image in images]))


@torch.inference_mode()
def predict_batch(
    model: ViewParserNet, batch: torch.Tensor, sizes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Masks of a resized batch.

    Args:
        batch: uint8[B, 3, S, S] (``images_to_batch``).
        sizes: each image's original (width, height), PIL's order.

    Returns:
        B uint8 arrays [height, width] with values 0..4.
    """
    device = next(model.parameters()).device
    logits = model(model.normalise(batch.to(device)))
    masks = []
    for row, (width, height) in zip(logits, sizes):
        full = F.interpolate(row[None], size=(height, width), mode="bilinear", align_corners=False)
        masks.append(full[0].argmax(dim=0).to(torch.uint8).cpu().numpy())
    return masks


def predict_images(model: ViewParserNet, images: Sequence[Image.Image]) -> list[np.ndarray]:
    """Masks of RGB PIL images (one batch), each the size of its image."""
    batch = images_to_batch(images, model.spec.input_size)
    return predict_batch(model, batch, [image.size for image in images])
