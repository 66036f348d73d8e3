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
from pathlib import Path

import numpy as np
from PIL import Image

from viewcoop_core.data.types import ReidSample
from viewcoop_core.vocabulary import MASK_LEGEND, NUM_MASK_LABELS, needs_view_ratios

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


class MissingMasksError(FileNotFoundError):
    """Some images that need a view mask have none in the masks folder."""


def mask_path_for(masks_dir: str | os.PathLike[str], image_path: str | os.PathLike[str]) -> Path:
    """The mask of ``image_path``: ``masks_dir/<image stem>.png``."""
    return Path(masks_dir) / mask_name(image_path)


def mask_name(image_path: str | os.PathLike[str]) -> str:
    """``<image stem>.png`` (string operations: this runs once per image of a dataset)."""
    return os.path.splitext(os.path.basename(image_path))[0] + ".png"


def existing_mask_names(masks_dir: Path) -> set[str]:
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
    present: set[str] | None = None,
) -> list[ReidSample]:
    """Copies of ``samples`` with ``mask_path`` set to ``masks_dir/<image stem>.png``.

    With ``required=True`` every sample must have its mask, else ``MissingMasksError``
    says how many are missing and where masks come from. With ``required=False``
    samples without a mask keep ``mask_path=None``. ``present``: the names in
    ``masks_dir`` when the caller listed it already.
    """
    masks_dir = Path(masks_dir)
    if present is None:
        present = existing_mask_names(masks_dir)
    attached: list[ReidSample] = []
    missing: list[Path] = []
    for sample in samples:
        name = mask_name(sample.path)
        if name in present:
            mask_path = os.path.join(masks_dir, name)
            attached.append(dataclasses.replace(sample, mask_path=mask_path))
        else:
            missing.append(masks_dir / name)
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
    Every refusal, an unreadable file included, is a ``MaskFormatError`` naming the file.
    """
    try:
        with Image.open(path) as image:
            size = tuple(image.size)
            mask = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "cannot decode"
        raise MaskFormatError(f"view mask {path} cannot be read as an image: {exc}") from exc
    if expected_size is not None and size != tuple(expected_size):
        raise MaskFormatError(
            f"view mask {path} is {size[0]}x{size[1]} (width x height) but its image is "
            f"{expected_size[0]}x{expected_size[1]}; a view mask must be the size of its image"
        )
    problem = mask_array_problem(mask)
    if problem:
        raise MaskFormatError(f"view mask {path} {problem}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def image_size_of(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image, from its header only."""
    with Image.open(path) as image:
        return tuple(image.size)


def mask_array_problem(mask: np.ndarray) -> str | None:
    """What is wrong with a decoded mask ``[H, W]`` (shape, dtype, values), or None."""
    if mask.ndim != 2:
        return (
            f"has shape {mask.shape}; expected a single-channel image (H, W) with values "
            f"{MASK_LEGEND}"
        )
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        return f"has dtype {mask.dtype}; expected integer labels"
    # min/max first: one pass each, and the common case needs nothing else.
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_MASK_LABELS):
        values = np.unique(mask)
        invalid = values[(values < 0) | (values >= NUM_MASK_LABELS)]
        return (
            f"contains values {invalid.tolist()} outside 0..{NUM_MASK_LABELS - 1}; "
            f"expected {MASK_LEGEND}"
        )
    return None


def require_view_masks(samples: Sequence[ReidSample], variant: str) -> None:
    """Raise unless every training sample has a view mask, when prompt ``variant`` states
    view proportions (``FileNotFoundError`` naming how many lack one and the way out)."""
    if not needs_view_ratios(variant):
        return
    missing = [s.path for s in samples if s.mask_path is None]
    if missing:
        raise MissingMasksError(
            f"prompt variant {variant!r} needs a view mask for every training image; "
            f"{len(missing)} of {len(samples)} have none (first: {missing[0]}). "
            "Set data.masks_dir to a folder of <image stem>.png masks (0 background, 1 front, "
            "2 back, 3 top, 4 side) or use a prompt variant without view clauses."
        )
