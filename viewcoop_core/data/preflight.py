"""The dataset pre-flight: every file a run will read, checked before anything starts.

A bad file found inside a Ray worker costs a minute of start-up and a traceback that
names nothing; found here it costs seconds and a list. Per file:

- an image exists, is not empty, and its header decodes (size and format known); a
  JPEG ends with its end-of-image marker and a PNG with its IEND chunk (a truncated
  file's header still decodes); a file failing the marker check, and any other
  format, is decoded fully, so trailing padding is not mistaken for damage;
- a view mask decodes, is single-channel, holds only the labels 0..4 and has exactly
  its image's size.

What happens to a bad file depends on what it is (the choice, per case):

- an unreadable **training** image is left out of training and counted (logged, and a
  metric of the run): one file in 38k should not stop a 50-epoch run, and unsupervised
  training has no label that losing an image could unbalance. Above
  ``data.max_skipped_fraction`` of the training set the run stops instead: that many
  is a broken copy, not a few bad files;
- an unreadable **query, gallery or test** image is an error: skipping it would change
  the test protocol and make numbers incomparable without anyone noticing;
- a **mask** that does not decode, holds other values, or has another size than its
  image is an error: resizing it would silently misplace the view labels.

Errors list every bad file (``DataCheckError``). Results are cached per file by size
and modification time, in a folder under the run storage (never in the data folder):
a second run re-reads only the files that changed. The checks run in threads (file
reads and PIL's decoders release the GIL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from viewcoop_core.config import DataConfig
from viewcoop_core.data.datasets import load_dataset, without_skipped
from viewcoop_core.data.image_headers import ends_properly, header_size
from viewcoop_core.data.masks import load_mask, require_view_masks
from viewcoop_core.data.types import ReidDataset, ReidSample

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_HEAD_BYTES = 1 << 16  # the headers of camera JPEGs (EXIF, tables) fit in far less
_TAIL_BYTES = 64
_CHUNK = 256  # files per thread task: one future per file costs more than a stat
_LISTED_IN_MESSAGE = 50
# PIL's ways of saying "this is not a decodable image".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class DataCheckError(ValueError):
    """Files of the dataset that a run cannot use; the message names every one."""


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict: ``problem`` is None when it is usable; ``width``/``height``
    are its pixel size when the header decoded."""

    problem: str | None
    width: int = 0
    height: int = 0


@dataclass
class PreflightReport:
    """The outcome of a pre-flight: the dataset to train on and what was left out.

    ``dataset``: the training split without ``skipped`` (ids relabelled); ``skipped``:
    training image path -> why it is unreadable; ``checked``/``cached``: files decoded
    now / answered from the cache; ``seconds``: wall time of the whole check.
    """

    dataset: ReidDataset
    skipped: dict[str, str] = field(default_factory=dict)
    checked: int = 0
    cached: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """MLflow-ready figures of the check."""
        return {
            "data_skipped_train_images": float(len(self.skipped)),
            "data_train_images": float(len(self.dataset.train)),
        }


# ------------------------------------------------------------------- one file


def check_image(path: str) -> FileCheck:
    """Exists, non-empty, header parses and the file ends with its end marker (JPEG,
    PNG: ``data.image_headers``); anything else, or any doubt, is decoded in full."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            if not head:
                return FileCheck("empty file (0 bytes)")
            size = header_size(head)
            if size is not None and ends_properly(head, _tail(handle, head)):
                return FileCheck(None, *size)
            handle.seek(0)
            # Another format, a long header, no end marker (truncated, or padded after
            # it): PIL decodes every pixel and decides.
            with Image.open(handle) as image:
                image.load()
                return FileCheck(None, *image.size)
    except FileNotFoundError:
        return FileCheck("file not found")
    except PermissionError:
        return FileCheck("not readable (permission denied)")
    except UnidentifiedImageError:
        return FileCheck("not an image file (no known image header)")
    except _DECODE_ERRORS as exc:
        return FileCheck(f"truncated or damaged, does not decode ({exc})")


def _tail(handle, head: bytes) -> bytes:
    """The last bytes of the open file whose first bytes are ``head``."""
    if len(head) < _HEAD_BYTES:  # the whole file is in head
        return head[-_TAIL_BYTES:]
    handle.seek(-_TAIL_BYTES, os.SEEK_END)
    return handle.read()


def check_mask(path: str) -> FileCheck:
    """Decodes fully, single channel, labels 0..4 (``data.masks.load_mask``)."""
    try:
        mask = load_mask(path)
    except FileNotFoundError:
        return FileCheck("file not found")
    except ValueError as exc:
        return FileCheck(str(exc).replace(f"view mask {path} ", "", 1))
    height, width = mask.shape
    return FileCheck(None, width, height)


# ------------------------------------------------------------------- the cache


class CheckCache:
    """File verdicts keyed by path, valid while the file's size and mtime are unchanged.

    One JSON file per dataset under ``folder``; ``None`` keeps nothing (every file is
    checked each time). It is rewritten only when a verdict changed, and then keeps only
    the files asked about (deleted files drop out).
    """

    def __init__(self, folder: str | os.PathLike[str] | None, key: str) -> None:
        digest = hashlib.sha256(f"{CACHE_VERSION}|{key}".encode()).hexdigest()[:16]
        self.path = None if folder is None else Path(folder) / f"preflight-{digest}.json"
        self.entries: dict[str, list] = {}
        self.seen: set[str] = set()
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())["files"]
            except (ValueError, KeyError, TypeError):
                logger.warning("ignoring an unreadable pre-flight cache %s", self.path)

    def get(self, key: str, stamp: tuple[int, int]) -> FileCheck | None:
        self.seen.add(key)
        entry = self.entries.get(key)
        if entry is None or tuple(entry[:2]) != stamp:
            return None
        return FileCheck(entry[2], entry[3], entry[4])

    def put(self, key: str, stamp: tuple[int, int] | None, check: FileCheck) -> None:
        self.changed = True
        if stamp is None:  # missing file: nothing to key on, check it again next time
            self.entries.pop(key, None)
            return
        self.seen.add(key)
        self.entries[key] = [*stamp, check.problem, check.width, check.height]

    def save(self) -> None:
        if self.path is None or (not self.changed and self.seen.issuperset(self.entries)):
            return
        files = {key: entry for key, entry in self.entries.items() if key in self.seen}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"version": CACHE_VERSION, "files": files}))
        os.replace(partial, self.path)  # concurrent runs: the last complete write wins


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def check_files(
    paths: Sequence[str], kind: str, cache: CheckCache, threads: int
) -> tuple[dict[str, FileCheck], int]:
    """``(path -> FileCheck, number answered from the cache)`` for the ``kind`` ("image"
    or "mask") files ``paths``."""
    checker = check_image if kind == "image" else check_mask

    def one(path: str) -> tuple[str, FileCheck, bool]:
        stamp, key = _stamp(path), f"{kind}:{path}"
        cached = cache.get(key, stamp) if stamp is not None else None
        if cached is not None:
            return path, cached, True
        check = checker(path) if stamp is not None else FileCheck("file not found")
        cache.put(key, stamp, check)
        return path, check, False

    def chunk(start: int) -> list[tuple[str, FileCheck, bool]]:
        return [one(path) for path in paths[start : start + _CHUNK]]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = [o for part in pool.map(chunk, range(0, len(paths), _CHUNK)) for o in part]
    return {path: check for path, check, _ in outcomes}, sum(hit for *_, hit in outcomes)


# ------------------------------------------------------------------- the whole set


def preflight(
    data: DataConfig,
    prompt_variant: str | None,
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    check_train: bool = True,
) -> PreflightReport:
    """Check every image and mask of the configured dataset (see the module docstring).

    Args:
        data: the config's data section (dataset, root, masks, skip settings).
        prompt_variant: the run's prompt; view-aware ones need a mask per training image
            (None: no requirement).
        cache_dir: where verdicts are cached (under the run storage); None: no cache.
        threads: parallel checks; default 4 x CPUs, at most 32 (reads wait on the disk).
        check_train: False checks only the evaluation splits (``viewcoop evaluate``).

    Returns:
        A ``PreflightReport`` whose dataset leaves the unreadable training images out.

    Raises:
        DataCheckError: naming every bad file, for the cases that stop a run.
    """
    start = time.perf_counter()
    dataset = load_dataset(data)
    if prompt_variant is not None:
        require_view_masks(dataset.train, prompt_variant)
    threads = threads or min(32, 4 * (os.cpu_count() or 1))
    cache = CheckCache(cache_dir, f"{data.dataset}|{dataset.root}|{data.masks_dir}")
    splits = _splits(dataset)[0 if check_train else 1 :]
    samples = [s for _, items in splits for s in items]
    images, image_hits = check_files(_unique(s.path for s in samples), "image", cache, threads)
    masks, mask_hits = check_files(
        _unique(s.mask_path for s in samples if s.mask_path), "mask", cache, threads
    )
    cache.save()
    train = dataset.train if check_train else []
    skipped = {s.path: images[s.path].problem for s in train if images[s.path].problem}
    errors = _fatal_problems(splits, images, masks, skipped)
    errors += _too_many_skipped(skipped, len(dataset.train), data.max_skipped_fraction)
    if errors:
        raise DataCheckError(_error_message(errors, dataset, cache_dir))
    if skipped:
        dataset = without_skipped(dataset, set(skipped))
        logger.warning(
            "pre-flight: %d of %d training images are unreadable and left out of training: %s",
            len(skipped),
            len(skipped) + len(dataset.train),
            _listing(skipped.items(), 10),
        )
    report = PreflightReport(
        dataset,
        skipped,
        checked=len(images) + len(masks) - image_hits - mask_hits,
        cached=image_hits + mask_hits,
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "pre-flight of %s: %d images and %d masks fine in %.1f s (%d from the cache)",
        dataset.name,
        len(images) - len(skipped),
        len(masks),
        report.seconds,
        report.cached,
    )
    return report


def _splits(dataset: ReidDataset) -> list[tuple[str, list[ReidSample]]]:
    return [
        ("train", dataset.train),
        ("query", dataset.query),
        ("gallery", dataset.gallery),
        ("test", dataset.test),
    ]


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _fatal_problems(
    splits: list[tuple[str, list[ReidSample]]],
    images: dict[str, FileCheck],
    masks: dict[str, FileCheck],
    skipped: dict[str, str],
) -> list[tuple[str, str]]:
    """(file, problem) of every bad evaluation image and every bad mask of a kept image."""
    errors: list[tuple[str, str]] = []
    for split, samples in splits:
        for sample in samples:
            image = images[sample.path]
            if image.problem and split != "train":
                errors.append((sample.path, f"{split} image, {image.problem}"))
            if not sample.mask_path or image.problem or sample.path in skipped:
                continue
            mask = masks[sample.mask_path]
            if mask.problem:
                errors.append((sample.mask_path, f"view mask {mask.problem}"))
            elif (mask.width, mask.height) != (image.width, image.height):
                errors.append(
                    (
                        sample.mask_path,
                        f"view mask is {mask.width}x{mask.height} but its image "
                        f"{Path(sample.path).name} is {image.width}x{image.height} (width x "
                        "height); a mask must have its image's size (it is never resized "
                        "to fit, which would misplace the view labels)",
                    )
                )
    return errors


def _too_many_skipped(skipped: dict[str, str], total: int, allowed: float) -> list:
    if not skipped or len(skipped) <= allowed * total:
        return []
    return [
        (
            path,
            f"training image, {problem} ({len(skipped)} of {total} training images are "
            f"unreadable, more than data.max_skipped_fraction={allowed})",
        )
        for path, problem in skipped.items()
    ]


def _listing(items: Iterable[tuple[str, str]], limit: int) -> str:
    items = list(items)
    shown = "; ".join(f"{path}: {problem}" for path, problem in items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _error_message(
    errors: list[tuple[str, str]], dataset: ReidDataset, cache_dir: str | os.PathLike | None
) -> str:
    """Every bad file, one per line; beyond a screenful the full list goes to a file."""
    lines = [f"  {path}: {problem}" for path, problem in errors]
    head = f"{len(errors)} file(s) of {dataset.name} at {dataset.root} cannot be used:"
    tail = (
        "Unreadable training images are left out (up to data.max_skipped_fraction of them); "
        "query, gallery and test images and view masks must all be usable, since skipping "
        "them would change the test protocol or the view labels. Replace these files (or "
        "remove an image together with its mask) and run again."
    )
    if len(lines) <= _LISTED_IN_MESSAGE or cache_dir is None:
        return "\n".join([head, *lines, tail])
    full = Path(cache_dir) / "preflight-errors.txt"
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text("\n".join(f"{path}\t{problem}" for path, problem in errors) + "\n")
    return "\n".join(
        [head, *lines[:_LISTED_IN_MESSAGE], f"  ... all {len(errors)} listed in {full}", tail]
    )
