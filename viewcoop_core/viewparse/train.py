"""Training the view parser on (image, mask) pairs: cross-entropy + soft Dice, bounded by steps.

The pairs are read once into memory at the parser's input size (1,000 crops at 128 px
are 49 MB; PVEN's 3,000 annotated VeRi crops at 256 px about 600 MB), then every step
draws a batch, augments it (``augment.py``) and takes one AdamW step on a one-cycle
schedule. The first ``coarse_fraction`` of the steps see the batch at half resolution
(progressive resizing): they cost about a third of a full step and teach what needs the
whole vehicle (which end is the front), so the same minutes buy more steps. Measured on
the parser benchmark at 1 thread: 600 full steps mean IoU 0.66; 450 half + 450 full steps
(less work) 0.72. The amount of work is fixed by ``steps``, never by wall-clock time, so the
same command gives the same parser on any machine.
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


def fit_parser(
    images: np.ndarray,
    masks: np.ndarray,
    spec: ParserSpec,
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> tuple[ViewParserNet, list[float]]:
    """Train a new parser on in-memory pairs.

    Args:
        images: uint8[N, 3, S, S] with S = ``spec.input_size``.
        masks: uint8[N, S, S], values 0..4.

    Returns:
        (the model in eval mode, the mean loss of every ``log_every`` steps).
    """
    size = spec.input_size
    if images.shape[1:] != (3, size, size) or masks.shape[1:] != (size, size):
        raise ValueError(
            f"training arrays must be [N, 3, {size}, {size}] and [N, {size}, {size}], "
            f"got {images.shape} and {masks.shape}"
        )
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_parser(spec).to(device).train()
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1
    )
    image_bank, mask_bank = torch.from_numpy(images), torch.from_numpy(masks)
    coarse_steps = round(settings.coarse_fraction * settings.steps)
    if coarse_steps and not spec.takes(size // 2):
        logger.info("parser input %d px has no half size this U-Net takes: all steps full", size)
        coarse_steps = 0
    history, window = [], []
    for step in range(settings.steps):
        index = torch.randint(len(image_bank), (settings.batch_size,), generator=generator)
        batch_images, batch_masks = augment_batch(image_bank[index], mask_bank[index], generator)
        if step < coarse_steps:
            batch_images, batch_masks = half_resolution(batch_images, batch_masks)
        logits = model(model.normalise(batch_images.to(device)))
        loss = parser_loss(logits, batch_masks.to(device), settings.loss, settings.dice_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        window.append(loss.item())
        if progress is not None:
            progress(step + 1, window[-1])
        if len(window) == settings.log_every or step + 1 == settings.steps:
            history.append(float(np.mean(window)))
            logger.info("parser step %d/%d: loss %.4f", step + 1, settings.steps, history[-1])
            window = []
    return model.eval(), history


def train_parser(
    image_dirs: Sequence[str | os.PathLike[str]],
    masks_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    spec: ParserSpec | None = None,
    settings: TrainSettings | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train on the images of ``image_dirs`` that have ``masks_dir/<stem>.png``; save to ``out``.

    Returns the checkpoint's ``training`` record (data, settings, losses, seconds).
    """
    spec = spec or ParserSpec()
    settings = settings or TrainSettings()
    out = Path(out)
    if out.exists() and not out.is_file():
        raise FileExistsError(f"parser checkpoint path {out} exists and is not a file")
    pairs = paired_files(image_dirs, masks_dir)
    started = time.perf_counter()
    images, masks = load_pairs_resized(pairs, spec.input_size)
    logger.info("parser training data: %d pairs at %d px", len(pairs), spec.input_size)
    model, history = fit_parser(images, masks, spec, settings, device, progress)
    record = {
        "image_dirs": [str(Path(d).resolve()) for d in image_dirs],
        "masks_dir": str(Path(masks_dir).resolve()),
        "num_pairs": len(pairs),
        "settings": asdict(settings),
        "loss_history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_parser(out, model.cpu(), record)
    logger.info("parser saved to %s (%.0f s)", out, record["seconds"])
    return record
