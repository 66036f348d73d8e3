"""Writing predicted view masks: one PNG per image, batched, resumable, never half-written.

The output folder is claimed as the project's (``outputs.claim_output_dir``). Masks whose
PNG is already there are not predicted again, so an interrupted run continues where it
stopped. Each PNG is written under a temporary name (``.<stem>.<pid>.tmp``) and renamed
into place, which is atomic on POSIX file systems: a mask under its real name is always
whole. Temporary files left by a process that no longer runs are removed on the next
start. Images are read and masks encoded in a thread pool (PIL releases the GIL), one
batch ahead of the model.

The folder records what made its masks (``SOURCE_FILE``: the checkpoint's SHA-256 and the
flip setting); a run with another checkpoint or setting is refused rather than mixing two
parsers' masks in one folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from viewcoop_core.outputs import claim_output_dir
from viewcoop_core.viewparse.checkpoint import file_digest, load_parser
from viewcoop_core.viewparse.files import batched, mask_name, mask_names, read_rgb, scan_images
from viewcoop_core.viewparse.inference import model_input, predict_batch
from viewcoop_core.viewparse.model import ViewParserNet

logger = logging.getLogger(__name__)

OUTPUT_KIND = "view-masks"
TMP_SUFFIX = ".tmp"
SOURCE_FILE = ".viewcoop-view-masks-source.json"

ProgressFn = Callable[[int, int], None]
"""Called with (images done, images to do) at the start and after every batch."""


@dataclass(frozen=True)
class PredictSummary:
    out_dir: str
    predicted: int
    already_done: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; other names as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"view-parser device {device} was asked for but CUDA is not available")
    return device


def _temporary_path(out: Path, name: str) -> Path:
    return out / f".{Path(name).stem}.{os.getpid()}{TMP_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> int:
    """Delete ``.<stem>.<pid>.tmp`` files of processes that no longer run; returns how many."""
    removed = 0
    with os.scandir(out) as entries:
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
                continue
            pid_text = entry.name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def _write_atomically(out: Path, name: str, write: Callable[[Path], None]) -> Path:
    """``write(path)`` a temporary file, then rename it to ``out/name``: never a half file."""
    final = out / name
    partial = _temporary_path(out, name)
    try:
        write(partial)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def write_mask_atomically(out: Path, name: str, mask: np.ndarray) -> Path:
    """Write uint8[H, W] ``mask`` as ``out/name`` via a temporary file and a rename."""
    return _write_atomically(out, name, lambda path: Image.fromarray(mask).save(path, "PNG"))


def mask_source(checkpoint: str | os.PathLike[str], flip: bool) -> dict[str, object]:
    """What makes a folder's masks: the checkpoint's bytes and the flip setting."""
    return {"checkpoint_sha256": file_digest(checkpoint), "flip": flip}


def check_mask_source(out: Path, source: dict[str, object], num_masks: int) -> None:
    """Record ``source`` in ``out``, or refuse when its ``num_masks`` masks came from
    another one.

    A folder with masks and no record (written before records existed, without the
    mirror average) is refused too: nothing tells which parser made them. A folder without
    masks takes the new source whatever it recorded.
    """
    path = out / SOURCE_FILE
    if num_masks:
        try:
            recorded = json.loads(path.read_text()) if path.is_file() else None
        except ValueError as error:
            raise ValueError(
                f"{path} (the record of which parser made the masks in {out}) is not readable "
                f"({error}); write to another --out folder."
            ) from error
        if recorded is None:
            raise ValueError(
                f"{out} holds {num_masks} masks and no record of the parser that made them "
                f"(an older release wrote it); write to another --out folder rather than mix "
                f"them with this parser's masks."
            )
        if recorded != source:
            raise ValueError(
                f"the {num_masks} masks in {out} were made by parser "
                f"{recorded.get('checkpoint_sha256')} with flip={recorded.get('flip')}; this "
                f"run uses {source['checkpoint_sha256']} with flip={source['flip']}. Write to "
                f"another --out folder rather than mix two parsers' masks."
            )
        return
    _write_atomically(out, SOURCE_FILE, lambda file: file.write_text(json.dumps(source) + "\n"))


def pending_images(
    image_dirs: Sequence[str | os.PathLike[str]], done: set[str]
) -> tuple[list[Path], int]:
    """(images of ``image_dirs`` whose mask is not in ``done``, how many are) from one
    listing of each folder; an image stem met twice is predicted once."""
    todo, seen, already = [], set(), 0
    for folder in map(Path, image_dirs):
        for name in scan_images(folder):
            target = mask_name(name)
            if target in seen:
                continue
            seen.add(target)
            if target in done:
                already += 1
            else:
                todo.append(folder / name)
    return todo, already


def predict_paths(
    model: ViewParserNet,
    images: Sequence[Path],
    out: Path,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    num_threads: int = 4,
    flip: bool = True,
) -> int:
    """Predict and write ``out/<stem>.png`` for every path of ``images``; returns the count.

    ``out`` must already be claimed. Reading batch k+1 overlaps the model on batch k.
    """
    total = len(images)
    if progress is not None:
        progress(0, total)
    done = 0
    with ThreadPoolExecutor(max_workers=num_threads) as pool:

        def read(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
            image = read_rgb(path)
            return model_input(image, model.spec.input_size), image.size

        def load(chunk: list[Path]) -> list[Future]:
            return [pool.submit(read, path) for path in chunk]

        chunks = list(batched(images, batch_size))
        upcoming = load(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in upcoming]
            upcoming = load(chunks[index + 1]) if index + 1 < len(chunks) else []
            batch = torch.from_numpy(np.stack([array for array, _ in loaded]))
            masks = predict_batch(model, batch, [size for _, size in loaded], flip)
            names = [mask_name(path.name) for path in chunk]
            list(pool.map(lambda item: write_mask_atomically(out, *item), zip(names, masks)))
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return done


def predict_folder(
    image_dirs: Sequence[str | os.PathLike[str]],
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    num_threads: int = 4,
    flip: bool = True,
) -> PredictSummary:
    """Masks for every image of ``image_dirs`` into ``out`` (claimed), skipping finished ones;
    ``flip``: average with the mirror image (``inference.py``)."""
    return predict_into(
        out,
        checkpoint,
        lambda done: pending_images(image_dirs, done),
        batch_size,
        device,
        progress,
        num_threads,
        flip,
    )


def predict_into(
    out: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    select: Callable[[set[str]], tuple[list[Path], int]],
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    num_threads: int = 4,
    flip: bool = True,
) -> PredictSummary:
    """Claim ``out``, list its masks once, predict what ``select(done mask names)`` returns.

    ``select`` returns (images to predict, how many already have their mask). ``out``'s
    masks must come from the same checkpoint and ``flip`` (``check_mask_source``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    out = claim_output_dir(out, OUTPUT_KIND, purpose="predicted view masks")
    removed = remove_stale_temporaries(out)
    if removed:
        logger.info("removed %d half-written masks of an interrupted run in %s", removed, out)
    done = mask_names(out)
    check_mask_source(out, mask_source(checkpoint, flip), len(done))
    todo, already = select(done)
    started = time.perf_counter()
    predicted = 0
    if todo:
        model, _ = load_parser(checkpoint, resolve_device(device))
        logger.info(
            "predicting %d view masks into %s (%d already there) on %s%s",
            len(todo),
            out,
            already,
            next(model.parameters()).device,
            ", averaged with the mirror images" if flip else "",
        )
        predicted = predict_paths(model, todo, out, batch_size, progress, num_threads, flip)
    summary = PredictSummary(str(out), predicted, already, time.perf_counter() - started)
    if predicted:
        logger.info(
            "predicted %d masks in %.1f s (%.1f images/s)",
            predicted,
            summary.seconds,
            summary.images_per_second,
        )
    return summary
