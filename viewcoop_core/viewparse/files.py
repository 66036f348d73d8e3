"""Images and view masks on disk for the parser: listing, pairing by stem, reading.

Folders are listed once each with ``os.scandir`` (a VehicleID-size folder holds 220k
images: one stat per file would be slow on network disks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from viewcoop_core.data.datasets import IMAGE_SUFFIXES
from viewcoop_core.data.masks import load_mask
from viewcoop_core.vocabulary import MASK_LEGEND

logger = logging.getLogger(__name__)

MASK_SUFFIX = ".png"
_LISTED = 5


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def scan_images(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Names of the image files directly in ``folder``, in directory order, streamed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_image_name(entry.name) and entry.is_file():
                yield entry.name


def mask_names(folder: str | os.PathLike[str]) -> set[str]:
    """Names of the ``.png`` files directly in ``folder`` (empty if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {
            e.name
            for e in entries
            if e.name.endswith(MASK_SUFFIX) and not e.name.startswith(".") and e.is_file()
        }


def mask_name(image_name: str) -> str:
    """``0001_c001_00016450_0.jpg`` -> ``0001_c001_00016450_0.png``."""
    return Path(image_name).stem + MASK_SUFFIX


def paired_files(
    image_dirs: Sequence[str | os.PathLike[str]], masks_dir: str | os.PathLike[str]
) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by stem over ``image_dirs``, sorted by stem.

    An image stem seen in two folders is kept once (the synthetic query folder holds
    copies of gallery images). Images without a mask are skipped (counted in the log);
    no pair at all is an error naming both folders.
    """
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder {masks_dir} does not exist or is not a folder")
    present = mask_names(masks_dir)
    pairs: dict[str, tuple[Path, Path]] = {}
    unmatched = 0
    for folder in map(Path, image_dirs):
        for name in scan_images(folder):
            stem = Path(name).stem
            if mask_name(name) not in present:
                unmatched += 1
            elif stem not in pairs:
                pairs[stem] = (folder / name, masks_dir / mask_name(name))
    if not pairs:
        raise FileNotFoundError(
            f"no image in {', '.join(map(str, image_dirs))} has a mask in {masks_dir}: masks are "
            f"matched by stem (<image stem>.png, single-channel, values {MASK_LEGEND})"
        )
    if unmatched:
        logger.info("%d images have no mask in %s and are left out", unmatched, masks_dir)
    return [pairs[stem] for stem in sorted(pairs)]


def read_rgb(path: str | os.PathLike[str]) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def resized_rgb(image: Image.Image, size: int) -> np.ndarray:
    """uint8[size, size, 3] (bilinear, antialiased)."""
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def resized_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """uint8[size, size] (nearest: labels stay labels)."""
    return np.asarray(
        Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST), dtype=np.uint8
    )


def read_pair(image_path: Path, mask_path: Path) -> tuple[Image.Image, np.ndarray]:
    """The image and its mask, checked to be the same size (the error names both files)."""
    image = read_rgb(image_path)
    mask = load_mask(mask_path, expected_size=image.size)
    return image, mask


def load_pairs_resized(
    pairs: Sequence[tuple[Path, Path]], size: int, num_threads: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs in memory at ``size``: uint8[N, 3, size, size] images, uint8[N, size, size] masks."""

    def one(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
        image, mask = read_pair(*pair)
        return resized_rgb(image, size).transpose(2, 0, 1), resized_mask(mask, size)

    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        loaded = list(pool.map(one, pairs))
    images = np.stack([image for image, _ in loaded])
    masks = np.stack([mask for _, mask in loaded])
    return images, masks


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
