"""Training the view parser on (image, mask) pairs: cross-entropy + soft Dice, bounded by steps.

The pairs are read once into memory at the parser's input size (1,000 crops at 128 px
are 49 MB; PVEN's 3,000 annotated VeRi crops at 256 px about 600 MB), then every step
draws a batch, augments it (``augment.py``) and takes one AdamW step on a one-cycle
schedule. The first ``coarse_fraction`` of the steps see the batch at half resolution
(progressive resizing): they cost about a third of a full step and teach what needs the
whole vehicle (which end is the front), so the same minutes buy more steps. Measured on
the parser benchmark at 1 thread: 600 full steps mean IoU 0.66; 450 half + 450 full steps
(less work) 0.72. The amount of work is fixed by ``steps``, never by wall-clock time, so
the same command does the same work on any machine, busy or not, and gives the same
weights to the bit on one machine. Across machines the CPU's kernels may round differently
and the weights drift apart: the seed-0 default of the release before scored mean IoU 0.843
on one 2-core machine and 0.847 on another.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from viewcoop_core.viewparse.augment import augment_batch
from viewcoop_core.viewparse.checkpoint import save_parser
from viewcoop_core.viewparse.files import load_pairs_resized, paired_files
from viewcoop_core.viewparse.losses import parser_loss
from viewcoop_core.viewparse.model import ViewParserNet, build_parser
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings

logger = logging.getLogger(__name__)


ProgressFn = Callable[[int, float], None]
"""Called after every step with (steps done, that step's loss)."""


def half_resolution(images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """float[B, 3, S, S] images and int64[B, S, S] masks -> the same at S // 2 pixels
    (images area-averaged, masks nearest). The U-Net is fully convolutional, so the same
    weights train on both sizes."""
    half = images.shape[-1] // 2
    images = F.interpolate(images, size=(half, half), mode="bilinear", antialias=True)
    masks = F.interpolate(masks[:, None].float(), size=(half, half), mode="nearest")
    return images, masks[:, 0].long()


def check_training_arrays(images: np.ndarray, masks: np.ndarray, spec: ParserSpec) -> None:
    """Refuse arrays that are not uint8[N, 3, S, S] images and [N, S, S] masks at S =
    ``spec.input_size``."""
    size = spec.input_size
    if images.shape[1:] != (3, size, size) or masks.shape[1:] != (size, size):
        raise ValueError(
            f"training arrays must be [N, 3, {size}, {size}] and [N, {size}, {size}], "
            f"got {images.shape} and {masks.shape}"
        )


def coarse_step_count(spec: ParserSpec, settings: TrainSettings) -> int:
    """How many of the first steps train at half the input size (0 where the U-Net takes
    no half size)."""
    coarse_steps = round(settings.coarse_fraction * settings.steps)
    if coarse_steps and not spec.takes(spec.input_size // 2):
        logger.info(
            "parser input %d px has no half size this U-Net takes: all steps full",
            spec.input_size,
        )
        return 0
    return coarse_steps


def run_steps(
    model: torch.nn.Module,
    image_bank: Tensor,
    mask_bank: Tensor,
    spec: ParserSpec,
    settings: TrainSettings,
    batch_size: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    on_step: ProgressFn | None = None,
) -> list[float]:
    """The training loop: ``settings.steps`` AdamW steps on a one-cycle schedule, each on
    ``batch_size`` pairs drawn from the banks with ``generator`` and augmented.

    ``model`` is the parser or its ``DistributedDataParallel`` wrapper (``train_parallel``).
    ``on_step(step, loss)`` is called after every step. Returns the mean loss of every
    ``log_every`` steps (of this process's share of the batch).
    """
    parser = getattr(model, "module", model)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1
    )
    coarse_steps = coarse_step_count(spec, settings)
    history, window = [], []
    for step in range(settings.steps):
        index = torch.randint(len(image_bank), (batch_size,), generator=generator)
        batch_images, batch_masks = augment_batch(image_bank[index], mask_bank[index], generator)
        if step < coarse_steps:
            batch_images, batch_masks = half_resolution(batch_images, batch_masks)
        logits = model(parser.normalise(batch_images.to(device)))
        loss = parser_loss(
            logits,
            batch_masks.to(device),
            settings.loss,
            settings.dice_weight,
            settings.boundary_weight,
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        window.append(loss.item())
        if on_step is not None:
            on_step(step + 1, window[-1])
        if len(window) == settings.log_every or step + 1 == settings.steps:
            history.append(float(np.mean(window)))
            logger.info("parser step %d/%d: loss %.4f", step + 1, settings.steps, history[-1])
            window = []
    return history


def fit_parser(
    images: np.ndarray,
    masks: np.ndarray,
    spec: ParserSpec,
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    processes: int = 1,
) -> tuple[ViewParserNet, list[float]]:
    """Train a new parser on in-memory pairs.

    Args:
        images: uint8[N, 3, S, S] with S = ``spec.input_size``.
        masks: uint8[N, S, S], values 0..4.
        processes: CPU processes that split each batch (``train_parallel.py``); 1 trains
            here, on ``device``.

    Returns:
        (the model in eval mode, the mean loss of every ``log_every`` steps).
    """
    check_training_arrays(images, masks, spec)
    if processes > 1:
        from viewcoop_core.viewparse.train_parallel import fit_parser_parallel

        return fit_parser_parallel(images, masks, spec, settings, processes, device, progress)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_parser(spec).to(device).train()
    bank = torch.from_numpy(images), torch.from_numpy(masks)
    history = run_steps(
        model, *bank, spec, settings, settings.batch_size, generator, device, progress
    )
    return model.eval(), history


def train_parser(
    image_dirs: Sequence[str | os.PathLike[str]],
    masks_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    spec: ParserSpec | None = None,
    settings: TrainSettings | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Train on the images of ``image_dirs`` that have ``masks_dir/<stem>.png``; save to ``out``.

    ``processes`` > 1 splits every batch over that many CPU processes (``train_parallel.py``).

    Returns the checkpoint's ``training`` record (data, settings, losses, seconds).
    """
    spec = spec or ParserSpec()
    settings = settings or TrainSettings()
    if processes != 1:  # refuse a split it cannot make before reading any image
        from viewcoop_core.viewparse.train_parallel import check_processes

        check_processes(settings, processes, device)
    out = Path(out)
    if out.exists() and not out.is_file():
        raise FileExistsError(f"parser checkpoint path {out} exists and is not a file")
    pairs = paired_files(image_dirs, masks_dir)
    started = time.perf_counter()
    images, masks = load_pairs_resized(pairs, spec.input_size)
    logger.info("parser training data: %d pairs at %d px", len(pairs), spec.input_size)
    model, history = fit_parser(images, masks, spec, settings, device, progress, processes)
    record = {
        "image_dirs": [str(Path(d).resolve()) for d in image_dirs],
        "masks_dir": str(Path(masks_dir).resolve()),
        "num_pairs": len(pairs),
        "settings": asdict(settings),
        "processes": processes,
        "loss_history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_parser(out, model.cpu(), record)
    logger.info("parser saved to %s (%.0f s)", out, record["seconds"])
    return record
