"""View masks: where they live, attaching them to samples, reading them.

A view mask is a single-channel PNG the size of its image whose pixels say which
side of the vehicle they show. The ViewCoOp prompt states the proportion of each
view, so every training image needs one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from viewcoop_core.data.types import ReidSample
from viewcoop_core.vocabulary import MASK_LEGEND, NUM_MASK_LABELS

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


class MissingMasksError(FileNotFoundError):
    """Some images that need a view mask have none in the masks folder."""


def mask_path_for(masks_dir: str | os.PathLike[str], image_path: str | os.PathLike[str]) -> Path:
    """The mask of ``image_path``: ``masks_dir/<image stem>.png``."""
    return Path(masks_dir) / f"{Path(image_path).stem}.png"


def _existing_mask_names(masks_dir: Path) -> set[str]:
    # One directory listing instead of one stat per image: VehicleID has 100k+ images.
    if not masks_dir.is_dir():
        return set()
    with os.scandir(masks_dir) as entries:
        return {entry.name for entry in entries if entry.is_file()}


def _missing_masks_message(missing: list[Path], total: int, masks_dir: Path) -> str:
    listed = ", ".join(path.name for path in missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    folder_note = "" if masks_dir.is_dir() else f" (the folder {masks_dir} does not exist)"
    return (
        f"{len(missing)} of {total} images have no view mask in {masks_dir}{folder_note}; "
        f"missing: {listed}{more}. The ViewCoOp prompt states the front/back/side/top "
        f"proportions of each image, so it needs a view mask per image, expected at "
        f"<masks_dir>/<image stem>.png: a single-channel PNG the size of the image with "
        f"values {MASK_LEGEND}. The synthetic generator writes these masks itself; for "
        f"VeRi-776 and VehicleID none are distributed, they must be produced by a "
        f"view-parsing model and written to that folder."
    )


def attach_masks(
    samples: Sequence[ReidSample],
    masks_dir: str | os.PathLike[str],
    required: bool = True,
) -> list[ReidSample]:
    """Copies of ``samples`` with ``mask_path`` set to ``masks_dir/<image stem>.png``.

    With ``required=True`` every sample must have its mask, else ``MissingMasksError``
    says how many are missing and where masks come from. With ``required=False``
    samples without a mask keep ``mask_path=None``.
    """
    masks_dir = Path(masks_dir)
    present = _existing_mask_names(masks_dir)
    attached: list[ReidSample] = []
    missing: list[Path] = []
    for sample in samples:
        mask_path = mask_path_for(masks_dir, sample.path)
        if mask_path.name in present:
            attached.append(dataclasses.replace(sample, mask_path=str(mask_path)))
        else:
            missing.append(mask_path)
            attached.append(sample)
    if missing and required:
        raise MissingMasksError(_missing_masks_message(missing, len(samples), masks_dir))
    if missing:
        logger.info(
            "%d of %d images have no view mask in %s", len(missing), len(samples), masks_dir
        )
    return attached


class MaskFormatError(ValueError):
    """A view mask file that is not a single-channel 0..4 label map of its image's size."""


def load_mask(
    path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a view mask as ``uint8[H, W]`` with values in 0..4 (see ``vocabulary.MASK_LABELS``).

    Palette PNGs are read as their palette indices, which is how label maps are
    usually saved; RGB images are refused rather than guessed at. ``expected_size``:
    the (width, height) of the mask's image (PIL's order); another size is refused.
    Every refusal is a ``MaskFormatError`` naming the file.
    """
    with Image.open(path) as image:
        if expected_size is not None and tuple(image.size) != tuple(expected_size):
            raise MaskFormatError(
                f"view mask {path} is {image.size[0]}x{image.size[1]} (width x height) but its "
                f"image is {expected_size[0]}x{expected_size[1]}; a view mask must be the size "
                f"of its image"
            )
        mask = np.asarray(image)
    if mask.ndim != 2:
        raise MaskFormatError(
            f"view mask {path} has shape {mask.shape}; expected a single-channel image "
            f"(H, W) with values {MASK_LEGEND}"
        )
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise MaskFormatError(f"view mask {path} has dtype {mask.dtype}; expected integer labels")
    values = np.unique(mask)
    invalid = values[(values < 0) | (values >= NUM_MASK_LABELS)]
    if invalid.size:
        raise MaskFormatError(
            f"view mask {path} contains values {invalid.tolist()} outside 0..{NUM_MASK_LABELS - 1}; "
            f"expected {MASK_LEGEND}"
        )
    return np.ascontiguousarray(mask, dtype=np.uint8)


def image_size_of(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image, from its header only."""
    with Image.open(path) as image:
        return tuple(image.size)


def check_mask_files(samples: Sequence[ReidSample], num_threads: int = 4) -> None:
    """Check that every attached mask is a 0..4 label map the size of its image.

    Raises ``MaskFormatError`` for the first bad file (in sample order), naming it. Masks
    are decoded in ``num_threads`` threads (PIL releases the GIL while decoding).
    """
    with_masks = [s for s in samples if s.mask_path is not None]

    def check(sample: ReidSample) -> None:
        load_mask(sample.mask_path, expected_size=image_size_of(sample.path))

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for _ in pool.map(check, with_masks):
            pass
