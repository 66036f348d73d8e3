"""Contrastive image-text pretraining of a small CLIP on captioned synthetic vehicles.

The paper starts from a pretrained CLIP: its image features already separate colours,
vehicle types and viewpoints because image-text pretraining taught them to. A randomly
initialised backbone has no such knowledge, so its first pseudo-labels are unrelated
to identity and the unsupervised loop never starts. Real CLIP weights cannot be
downloaded everywhere (the CPU demo), so this module gives the tiny architecture the
same kind of prior at small scale: CLIP's symmetric InfoNCE on synthetic vehicle
images paired with captions of their body type, colour, marks and dominant view.

The pretraining set is drawn by ``viewcoop_core.synthetic.make_synthetic`` with
its own seed (default 1000; the demo's re-id set uses 0), so its identities are new
random draws: no identity, camera style or image of the re-id set is seen here.

``ensure_pretrained_tiny_clip`` draws the set and trains once, caching the weights
under a name derived from every parameter; ``build_clip(name, pretrained=path)`` loads
them. ``viewcoop pretrain-tiny --probe-data DIR`` also probes the weights on a re-id set
(zero-training mAP and pseudo-label ARI, against random init; ``probe.py``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.data.transforms import build_train_transform
from viewcoop_core.models.clip import (
    TINY_MODEL_NAME,
    ClipBundle,
    build_clip,
    encode_text_embeddings,
)
from viewcoop_core.synthetic.captions import CaptionedImage, load_images, read_captioned_images

logger = logging.getLogger(__name__)

# Bump when captions, the loss or the data selection change: it is part of the cache key.
PRETRAIN_FORMAT_VERSION = 1
# open_clip's training clamps the learnt temperature at 100.
_MAX_LOGIT_SCALE = math.log(100.0)
_WARMUP_FRACTION = 0.1

# The pretraining set and budget of the CPU demo (see ensure_pretrained_tiny_clip):
# ~1,900 images, ~50 epochs in 2.5 minutes on 2 cores. Many cameras matter most: the
# re-id set is seen through cameras (light, colour cast, background, blur) never met
# here, and at equal image counts 24 camera styles generalise far better than 8 or 12.
DEFAULT_MAX_SECONDS = 150.0


# ----------------------------------------------------------------------------- loss


def clip_contrastive_loss(
    image_features: Tensor, text_features: Tensor, caption_index: Tensor, logit_scale: Tensor
) -> Tensor:
    """CLIP's symmetric InfoNCE, with several images allowed to share one caption.

    Args:
        image_features: float [B, D], one row per image (any norm).
        text_features: float [U, D], one row per distinct caption of the batch.
        caption_index: long [B], the row of ``text_features`` describing each image.
        logit_scale: float scalar, the log of the softmax temperature's inverse.

    Returns:
        float scalar: the mean of image->text cross-entropy (each image against the U
        captions) and text->image cross-entropy (each caption against the B images,
        its target spread evenly over the images it describes). With B distinct
        captions this is exactly the CLIP loss; de-duplicating captions keeps two
        images of the same vehicle and view from being pushed apart as negatives.
    """
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.T  # [B, U]
    image_to_text = F.cross_entropy(logits, caption_index)
    described = F.one_hot(caption_index, num_classes=text_features.shape[0]).T.float()  # [U, B]
    text_to_image = F.cross_entropy(logits.T, described / described.sum(1, keepdim=True))
    return (image_to_text + text_to_image) / 2


def _encode_captions(model: nn.Module, tokens: Tensor) -> Tensor:
    """Text features float [U, D] of tokenised captions long [U, 77].

    Runs the text tower only up to the longest caption: under the causal mask the
    padding after EOT never reaches the EOT output, so the result equals
    ``model.encode_text(tokens)`` at a fraction of the cost.
    """
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    return encode_text_embeddings(model, model.token_embedding(tokens[:, :length]), eot)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class PretrainSummary:
    """What ``pretrain_clip`` did; ``stopped_by_time`` when ``max_seconds`` ended it.

    ``first_loss`` is the mean loss of the first full epoch (NaN if none finished),
    ``final_loss`` that of the last epoch run, complete or not.
    """

    out_path: str
    num_images: int
    num_identities: int
    num_captions: int
    epochs_completed: int
    steps: int
    first_loss: float
    final_loss: float
    final_logit_scale: float
    seconds: float
    stopped_by_time: bool


def _learning_rate_factor(progress: float) -> float:
    """Linear warmup over the first 10 % of training, then cosine decay to zero."""
    if progress < _WARMUP_FRACTION:
        return max(progress / _WARMUP_FRACTION, 0.01)
    return 0.5 * (
        1.0 + math.cos(math.pi * min(1.0, (progress - _WARMUP_FRACTION) / (1.0 - _WARMUP_FRACTION)))
    )


def _adamw_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; norms, biases, embeddings and the temperature stay undecayed."""
    decay, keep = [], []
    for name, parameter in model.named_parameters():
        no_decay = parameter.ndim < 2 or "embedding" in name or "logit_scale" in name
        (keep if no_decay else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def _write_atomically(state_dict: dict[str, Tensor], out_path: Path) -> None:
    # A run killed mid-write must not leave a file that the cache would take as done.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    torch.save(state_dict, partial)
    os.replace(partial, out_path)


def pretrain_clip(
    data_root: str | os.PathLike,
    out_path: str | os.PathLike,
    model_name: str = TINY_MODEL_NAME,
    image_size: int = 128,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    view_caption_p: float = 0.25,
    seed: int = 0,
    max_seconds: float | None = None,
    device: str = "cpu",
) -> PretrainSummary:
    """Train a randomly initialised CLIP contrastively on a captioned synthetic set.

    Images get the re-id training augmentation (``build_train_transform``: flip, pad
    and crop, random erasing). Each step describes each image by its view caption
    with probability ``view_caption_p``, else by its identity caption: the text tower
    learns the view words, while the image features are not pushed to separate the
    views of one vehicle as much as view-only captions would (which hurts re-id).
    AdamW with a warmup-cosine schedule whose progress is the larger of the step
    fraction and the elapsed fraction of ``max_seconds``, so a run stopped by the time
    cap has still annealed its learning rate. The temperature is learnt, clamped at
    100 like open_clip. Seeding uses a forked torch RNG: the caller's global state is
    untouched.

    Args:
        data_root: a folder written by ``make_synthetic`` (needs ``meta.json``, masks).
        out_path: where ``model.state_dict()`` is saved (``.pt``), written atomically.
        model_name, image_size: the architecture, as for ``build_clip``.
        epochs, batch_size, lr, weight_decay: optimisation; the last partial batch of
            each epoch is dropped.
        view_caption_p: probability, per image and step, of the caption naming the view.
        seed: model initialisation, batch order, caption choice and augmentation.
        max_seconds: hard cap on the training loop's wall time (checked every step).
        device: where the model trains.

    Returns:
        A ``PretrainSummary``.
    """
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs={epochs} must be >= 1 and batch_size={batch_size} >= 2")
    if not 0.0 <= view_caption_p <= 1.0:
        raise ValueError(f"view_caption_p={view_caption_p} must be a probability in [0, 1]")
    out_path = Path(out_path).expanduser()
    if out_path.suffix not in (".pt", ".pth"):
        raise ValueError(f"out_path={str(out_path)!r}: expected a .pt or .pth file name")
    pairs = read_captioned_images(data_root)
    if len(pairs) < batch_size:
        raise ValueError(
            f"{data_root} holds {len(pairs)} images, fewer than batch_size={batch_size}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bundle = build_clip(model_name, pretrained=None, image_size=image_size, device=device)
        schedule = _Schedule(lr, epochs * (len(pairs) // batch_size), max_seconds)
        summary = _train(
            bundle,
            pairs,
            out_path,
            epochs,
            batch_size,
            weight_decay,
            view_caption_p,
            schedule,
            device,
        )
    return summary


@dataclass(frozen=True)
class _Schedule:
    """Learning rate over training; ``max_seconds`` ends it early."""

    lr: float
    total_steps: int
    max_seconds: float | None

    def out_of_time(self, elapsed: float) -> bool:
        return self.max_seconds is not None and elapsed >= self.max_seconds

    def learning_rate(self, step: int, elapsed: float) -> float:
        progress = step / self.total_steps
        if self.max_seconds is not None:
            progress = max(progress, elapsed / self.max_seconds)
        return self.lr * _learning_rate_factor(progress)


@dataclass(frozen=True)
class _CaptionTable:
    """Both captions of every image as rows of one token table.

    ``tokens`` long [C, 77] for the C distinct sentences; ``with_view`` and
    ``without_view`` long [N] give each image's two rows.
    """

    tokens: Tensor
    with_view: Tensor
    without_view: Tensor

    @classmethod
    def build(cls, pairs: Sequence[CaptionedImage], tokenizer) -> _CaptionTable:
        sentences = sorted({p.caption for p in pairs} | {p.identity_caption for p in pairs})
        row = {sentence: i for i, sentence in enumerate(sentences)}
        return cls(
            tokens=tokenizer(sentences),
            with_view=torch.tensor([row[p.caption] for p in pairs]),
            without_view=torch.tensor([row[p.identity_caption] for p in pairs]),
        )

    def sample(self, batch: Tensor, view_caption_p: float) -> Tensor:
        """Caption rows long [B] for the images ``batch``, each naming its view w.p. p."""
        names_view = torch.rand(len(batch)) < view_caption_p
        return torch.where(names_view, self.with_view[batch], self.without_view[batch])


def _train(
    bundle: ClipBundle,
    pairs: list[CaptionedImage],
    out_path: Path,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    view_caption_p: float,
    schedule: _Schedule,
    device: str,
) -> PretrainSummary:
    start = time.perf_counter()
    model = bundle.model.train()
    transform = build_train_transform((bundle.image_size,) * 2, bundle.mean, bundle.std)
    images = load_images([pair.path for pair in pairs])
    captions = _CaptionTable.build(pairs, bundle.tokenizer)
    tokens = captions.tokens.to(device)
    optimiser = torch.optim.AdamW(_adamw_parameter_groups(model, weight_decay), lr=schedule.lr)
    steps_per_epoch = len(pairs) // batch_size
    logger.info(
        "pretraining %s on %d images of %d identities, %d distinct captions: %d epochs x %d "
        "steps of %d%s",
        bundle.model_name,
        len(pairs),
        len({pair.vid for pair in pairs}),
        len(captions.tokens),
        epochs,
        steps_per_epoch,
        batch_size,
        f", at most {schedule.max_seconds:.0f} s" if schedule.max_seconds is not None else "",
    )
    step, epochs_completed, epoch_losses, first_loss = 0, 0, [], float("nan")
    while epochs_completed < epochs and not schedule.out_of_time(time.perf_counter() - start):
        epoch_losses = []
        for batch in torch.randperm(len(pairs))[: steps_per_epoch * batch_size].split(batch_size):
            elapsed = time.perf_counter() - start
            if schedule.out_of_time(elapsed):
                break
            for group in optimiser.param_groups:
                group["lr"] = schedule.learning_rate(step, elapsed)
            pixels = torch.stack([transform(images[int(i)]) for i in batch])
            caption_rows = captions.sample(batch, view_caption_p)
            epoch_losses.append(
                train_step(model, optimiser, pixels.to(device), tokens, caption_rows.to(device))
            )
            step += 1
        else:
            epochs_completed += 1
            if epochs_completed == 1:
                first_loss = float(np.mean(epoch_losses))
    stopped_by_time = epochs_completed < epochs
    if stopped_by_time:
        logger.warning(
            "pretraining stopped by max_seconds=%.0f after %d of %d steps (%d full epochs)",
            schedule.max_seconds,
            step,
            schedule.total_steps,
            epochs_completed,
        )
    _write_atomically(model.state_dict(), out_path)
    summary = PretrainSummary(
        out_path=str(out_path),
        num_images=len(pairs),
        num_identities=len({pair.vid for pair in pairs}),
        num_captions=len(captions.tokens),
        epochs_completed=epochs_completed,
        steps=step,
        first_loss=first_loss,
        final_loss=float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
        final_logit_scale=float(model.logit_scale.detach().exp()),
        seconds=round(time.perf_counter() - start, 2),
        stopped_by_time=stopped_by_time,
    )
    logger.info(
        "pretrained %s in %.0f s (%d steps): loss %.3f -> %.3f, logit scale %.1f; saved %s",
        bundle.model_name,
        summary.seconds,
        step,
        summary.first_loss,
        summary.final_loss,
        summary.final_logit_scale,
        out_path,
    )
    return summary


def train_step(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    pixels: Tensor,
    tokens: Tensor,
    caption_rows: Tensor,
) -> float:
    """One contrastive optimiser step; returns the loss.

    Args:
        model: an open_clip CLIP in train mode.
        optimiser: over ``model``'s parameters.
        pixels: float [B, 3, H, W], normalised images.
        tokens: long [C, 77], the caption table.
        caption_rows: long [B], the row of ``tokens`` describing each image.
    """
    # Each distinct caption of the batch is encoded once.
    distinct, caption_index = torch.unique(caption_rows, return_inverse=True)
    loss = clip_contrastive_loss(
        model.encode_image(pixels),
        _encode_captions(model, tokens[distinct]),
        caption_index,
        model.logit_scale,
    )
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, _MAX_LOGIT_SCALE)
    return float(loss.detach())
