"""A small VeRi-layout set of real JPEGs and PNG masks for the data-check tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 24, 16  # not square, so a transposed size is caught
SPLITS = {"image_train": 12, "image_query": 2, "image_test": 4}


def jpeg_bytes(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT), **save) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def good_mask(size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, : size[0] // 2] = 1
    mask[:, size[0] // 2 :] = 4
    return mask


def write_set(root: Path, masks: bool = True) -> dict[str, list[Path]]:
    """A VeRi-layout set: 12 train (3 ids x 2 cams x 2), 2 query, 4 gallery images."""
    files: dict[str, list[Path]] = {}
    for offset, (split, count) in enumerate(SPLITS.items()):
        (root / split).mkdir(parents=True)
        files[split] = []
        for i in range(count):
            name = f"{i // 4 + 1 + 10 * offset:04d}_c{i % 2 + 1:03d}_{i:08d}_0"
            path = root / split / f"{name}.jpg"
            path.write_bytes(jpeg_bytes(i))
            files[split].append(path)
            if masks:
                (root / "masks").mkdir(exist_ok=True)
                (root / "masks" / f"{name}.png").write_bytes(png_bytes(good_mask()))
    return files
