"""Predicted view masks for a run's dataset: made once, cached by checkpoint and image set.

With ``data.view_parser`` set, ``prepare_view_masks`` (called by the driver before Ray
starts) fills one folder with a mask for every image of the dataset (train, query,
gallery / test): the given mask from ``data.masks_dir`` where there is one (checked and
copied), a predicted one otherwise. The folder's name holds two digests:

* the checkpoint's bytes (SHA-256), so retraining the parser never reuses old masks;
* the image set: every image's path, size and modification time, plus the same for the
  given masks, so a redrawn synthetic set or an added image gets a new folder;

and ``-flip`` or ``-noflip`` for ``data.view_parser_flip`` (the masks differ; folders of
releases before the setting have neither and are never read).

The run then reads that folder as its ``data.masks_dir``. Prediction is resumable, so an
interrupted preparation continues on the next start; a finished one costs one listing
and a stat per image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.data.datasets import build_dataset
from viewcoop_core.data.masks import image_size_of, load_mask, mask_path_for
from viewcoop_core.data.types import ReidDataset
from viewcoop_core.outputs import claim_output_dir
from viewcoop_core.viewparse.checkpoint import file_digest, read_parser_checkpoint
from viewcoop_core.viewparse.files import mask_name, mask_names
from viewcoop_core.viewparse.predict import predict_into

logger = logging.getLogger(__name__)

CACHE_KIND = "view-mask-cache"
MANIFEST_FILE = "cache.json"
DEFAULT_CACHE_DIR = "view-masks"
_DIGEST_CHARS = 16


def default_cache_dir(root: str | os.PathLike[str]) -> Path:
    """``view-masks/`` next to the dataset root (beside the synthetic CLIP's ``pretrained/``)."""
    return Path(root).expanduser().resolve().parent / DEFAULT_CACHE_DIR


def dataset_images(dataset: ReidDataset) -> list[Path]:
    """Every image of the dataset once per stem (masks are named by stem), in split order."""
    images, seen = [], set()
    for sample in dataset.train + dataset.query + dataset.gallery + dataset.test:
        stem = Path(sample.path).stem
        if stem not in seen:
            seen.add(stem)
            images.append(Path(sample.path))
    return images


def image_set_digest(images: Sequence[Path], given: Iterable[Path]) -> str:
    """SHA-256 over each image's and each given mask's (path, size, mtime), sorted."""
    digest = hashlib.sha256()
    for kind, paths in (("image", images), ("mask", given)):
        for path in sorted(map(str, paths)):
            stat = os.stat(path)
            digest.update(f"{kind}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _given_masks(images: Sequence[Path], masks_dir: str | None) -> dict[str, Path]:
    """mask name -> path in ``masks_dir``, for the images that have one there."""
    if not masks_dir:
        return {}
    folder = Path(masks_dir).expanduser().resolve()
    present = mask_names(folder)
    return {
        mask_name(image.name): mask_path_for(folder, image)
        for image in images
        if mask_name(image.name) in present
    }


def _check_given(images: Sequence[Path], given: dict[str, Path], done: set[str]) -> None:
    """Each given mask not yet in the cache must be a 0..4 map the size of its image
    (``MaskFormatError`` names the file)."""
    for image in images:
        name = mask_name(image.name)
        if name in given and name not in done:
            load_mask(given[name], expected_size=image_size_of(image))


def _copy_given(given: dict[str, Path], out: Path, done: set[str]) -> int:
    """Copy the given masks not yet in ``out`` (temporary name, then rename); returns how many."""
    copied = 0
    for name, source in given.items():
        if name not in done:
            partial = out / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(source, partial)
            os.replace(partial, out / name)
            copied += 1
    return copied


def cache_folder(cfg: ExperimentConfig, images: Sequence[Path], given: dict[str, Path]) -> Path:
    """The cache folder for this checkpoint and image set (not created here)."""
    data = cfg.data
    checkpoint_digest = file_digest(data.view_parser)[:_DIGEST_CHARS]
    images_digest = image_set_digest(images, given.values())[:_DIGEST_CHARS]
    root = Path(data.view_masks_cache or default_cache_dir(data.root)).expanduser().resolve()
    flip = "flip" if data.view_parser_flip else "noflip"
    return root / f"{data.dataset}-parser{checkpoint_digest}-images{images_digest}-{flip}"


def _listing_dataset(cfg: ExperimentConfig) -> ReidDataset:
    kwargs = {}
    if cfg.data.dataset == "vehicleid":
        kwargs["test_size"] = cfg.data.vehicleid_test_size
    return build_dataset(cfg.data.dataset, cfg.data.root, **kwargs)


def prepare_view_masks(cfg: ExperimentConfig) -> ExperimentConfig:
    """With ``data.view_parser``: a complete masks folder for the dataset (see the module
    docstring) and ``cfg`` with ``data.masks_dir`` pointing at it; otherwise ``cfg`` as it is."""
    data = cfg.data
    if not data.view_parser:
        return cfg
    checkpoint = Path(data.view_parser).expanduser().resolve()
    read_parser_checkpoint(checkpoint)  # a bad file fails here, before anything is written
    images = dataset_images(_listing_dataset(cfg))
    if _is_finished_cache(data.masks_dir, checkpoint, data.view_parser_flip, images):
        return cfg  # prepared already (a sweep's driver did it for its trials)
    given = _given_masks(images, data.masks_dir)
    resolved = dataclasses.replace(data, view_parser=str(checkpoint))
    cfg = dataclasses.replace(cfg, data=resolved)
    folder = cache_folder(cfg, images, given)
    _check_given(images, given, mask_names(folder))  # before anything is written
    claim_output_dir(folder.parent, CACHE_KIND, purpose="the view-mask cache")

    def select(done: set[str]) -> tuple[list[Path], int]:
        copied = _copy_given(given, folder, done)
        todo = [image for image in images if mask_name(image.name) not in done | given.keys()]
        return todo, len(images) - len(todo) - copied

    summary = predict_into(
        folder,
        checkpoint,
        select,
        data.view_parser_batch_size,
        data.view_parser_device,
        progress=_ProgressLog(),
        flip=data.view_parser_flip,
    )
    _write_manifest(folder, cfg, len(images), len(given))
    logger.info(
        "view masks for %d images in %s (%d given, %d predicted now, %d cached)",
        len(images),
        folder,
        len(given),
        summary.predicted,
        summary.already_done,
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(resolved, masks_dir=str(folder)))


class _ProgressLog:
    """Logs prediction progress at every tenth of the work (the driver has no progress bar)."""

    def __init__(self) -> None:
        self.logged = 0

    def __call__(self, done: int, total: int) -> None:
        if done and (done == total or done * 10 // total > self.logged * 10 // total):
            logger.info("view masks: %d/%d predicted", done, total)
            self.logged = done


def _is_finished_cache(
    masks_dir: str | None, checkpoint: Path, flip: bool, images: Sequence[Path]
) -> bool:
    """Whether ``masks_dir`` is a cache folder this checkpoint finished for these images
    with this flip setting (the manifest is written last, so an interrupted folder never
    counts)."""
    if not masks_dir or not (Path(masks_dir) / MANIFEST_FILE).is_file():
        return False
    manifest = json.loads((Path(masks_dir) / MANIFEST_FILE).read_text())
    if manifest.get("checkpoint") != str(checkpoint) or manifest.get("flip", False) != flip:
        return False
    return {mask_name(image.name) for image in images} <= mask_names(Path(masks_dir))


def _write_manifest(folder: Path, cfg: ExperimentConfig, num_images: int, num_given: int) -> None:
    manifest = {
        "checkpoint": cfg.data.view_parser,
        "flip": cfg.data.view_parser_flip,
        "dataset": cfg.data.dataset,
        "root": str(Path(cfg.data.root).resolve()),
        "given_masks_dir": cfg.data.masks_dir,
        "num_images": num_images,
        "num_given": num_given,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
