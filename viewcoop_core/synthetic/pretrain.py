"""Contrastive image-text pretraining of a small CLIP on captioned synthetic vehicles.

The paper starts from a pretrained CLIP: its image features already separate colours,
vehicle types and viewpoints because image-text pretraining taught them to. A randomly
initialised backbone has no such knowledge, so its first pseudo-labels are unrelated
to identity and the unsupervised loop never starts. Real CLIP weights cannot be
downloaded everywhere (the CPU demo), so this module gives the tiny architecture the
same kind of prior at small scale: CLIP's symmetric InfoNCE on synthetic vehicle
images paired with captions of their body type, colour, marks and dominant view, under
augmentation that changes what a camera changes (light, contrast, framing, sharpness),
so the captions pull together one vehicle seen by different cameras.

The pretraining set is drawn by ``viewcoop_core.synthetic.make_synthetic`` with
its own seed (``PRETRAIN_SPEC``, seed 1000; the re-id sets use other seeds), so its
identities and cameras are new random draws: no identity, camera style or image of a
re-id set is seen here. ``pretrain_clip`` is bounded by steps (``PretrainRecipe``), so
a recipe gives the same weights however busy the machine is. The project ships the
result (``viewcoop_core/models/weights/``, ``viewcoop pretrain-tiny`` remakes it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from viewcoop_core.models.clip import (
    ClipBundle,
    build_clip,
    encode_text_embeddings,
)
from viewcoop_core.synthetic.augment import CameraAugment
from viewcoop_core.synthetic.captions import CaptionedImage, load_images, read_captioned_images
from viewcoop_core.synthetic.recipe import PretrainRecipe

logger = logging.getLogger(__name__)

# open_clip's training clamps the learnt temperature at 100.
_MAX_LOGIT_SCALE = math.log(100.0)
_WARMUP_FRACTION = 0.1
# Steps averaged for the first and the final loss of the summary.
_LOSS_WINDOW = 50


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
    """What ``pretrain_clip`` did. ``first_loss`` / ``final_loss`` average the first and
    the last 50 steps; ``seconds`` is for information only (nothing depends on it)."""

    out_path: str
    num_images: int
    num_identities: int
    num_captions: int
    steps: int
    epochs: float
    first_loss: float
    final_loss: float
    final_logit_scale: float
    seconds: float


def decode_images(paths: Sequence[str], size: int) -> Tensor:
    """Every image once, resized to ``size`` square (bicubic), as uint8 [N, 3, size, size]:
    the whole pretraining set stays in memory (~50 KB an image) and is augmented in
    batches (``CameraAugment``)."""
    images = load_images(paths)
    return torch.stack(
        [
            torch.from_numpy(np.array(image.resize((size, size), Image.Resampling.BICUBIC)))
            .permute(2, 0, 1)
            .contiguous()
            for image in images
        ]
    )


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


def save_weights(model: nn.Module, out_path: Path, metadata: dict) -> None:
    """The state dict as fp16 safetensors (tensors only: loading runs no code), written to
    a temporary name and renamed, so an interrupted run never leaves a file that looks
    finished; ``metadata`` goes to the JSON file next to it, written after."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    partial = out_path.with_name(out_path.name + ".partial")
    save_file(tensors, str(partial))
    os.replace(partial, out_path)
    out_path.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")


def pretrain_clip(
    data_root: str | os.PathLike,
    out_path: str | os.PathLike,
    recipe: PretrainRecipe,
    device: str = "cpu",
) -> PretrainSummary:
    """Train a randomly initialised ``recipe.model`` contrastively on a captioned
    synthetic set for ``recipe.steps`` steps, and save it to ``out_path`` (.safetensors).

    Seeding uses a forked torch RNG: the caller's global state is untouched.
    """
    out_path = Path(out_path).expanduser()
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path={str(out_path)!r}: expected a .safetensors file name")
    pairs = read_captioned_images(data_root)
    if len(pairs) < recipe.batch_size:
        raise ValueError(
            f"{data_root} holds {len(pairs)} images, fewer than batch_size={recipe.batch_size}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        bundle = build_clip(
            recipe.model, pretrained=None, image_size=recipe.image_size, device=device
        )
        summary = _train(bundle, pairs, out_path, recipe, device)
    return summary


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


def _batches(num_items: int, batch_size: int, steps: int):
    """``steps`` batches of indices: shuffled epochs, the last partial batch dropped."""
    per_epoch = num_items // batch_size
    step = 0
    while step < steps:
        for batch in torch.randperm(num_items)[: per_epoch * batch_size].split(batch_size):
            if step == steps:
                return
            yield step, batch
            step += 1


def _train(
    bundle: ClipBundle,
    pairs: list[CaptionedImage],
    out_path: Path,
    recipe: PretrainRecipe,
    device: str,
) -> PretrainSummary:
    start = time.perf_counter()
    model = bundle.model.train()
    augment = CameraAugment()
    images = decode_images([pair.path for pair in pairs], bundle.image_size).to(device)
    captions = _CaptionTable.build(pairs, bundle.tokenizer)
    tokens = captions.tokens.to(device)
    optimiser = torch.optim.AdamW(_adamw_parameter_groups(model, recipe.weight_decay), lr=recipe.lr)
    logger.info(
        "pretraining %s on %d images of %d identities, %d distinct captions: %d steps of %d",
        bundle.model_name,
        len(pairs),
        len({pair.vid for pair in pairs}),
        len(captions.tokens),
        recipe.steps,
        recipe.batch_size,
    )
    losses = []
    for step, batch in _batches(len(pairs), recipe.batch_size, recipe.steps):
        for group in optimiser.param_groups:
            group["lr"] = recipe.lr * _learning_rate_factor(step / recipe.steps)
        pixels = augment(images[batch.to(device)], bundle.mean, bundle.std)
        caption_rows = captions.sample(batch, recipe.view_caption_p)
        losses.append(
            train_step(model, optimiser, pixels.to(device), tokens, caption_rows.to(device))
        )
        if (step + 1) % 250 == 0:
            logger.info(
                "pretraining step %d of %d: loss %.3f",
                step + 1,
                recipe.steps,
                np.mean(losses[-250:]),
            )
    summary = PretrainSummary(
        out_path=str(out_path),
        num_images=len(pairs),
        num_identities=len({pair.vid for pair in pairs}),
        num_captions=len(captions.tokens),
        steps=len(losses),
        epochs=round(len(losses) * recipe.batch_size / len(pairs), 2),
        first_loss=float(np.mean(losses[:_LOSS_WINDOW])),
        final_loss=float(np.mean(losses[-_LOSS_WINDOW:])),
        final_logit_scale=float(model.logit_scale.detach().exp()),
        seconds=round(time.perf_counter() - start, 2),
    )
    save_weights(model, out_path, {"recipe": recipe.to_dict(), "summary": asdict(summary)})
    logger.info(
        "pretrained %s: %d steps (%.1f epochs), loss %.3f -> %.3f, logit scale %.1f; saved %s",
        bundle.model_name,
        summary.steps,
        summary.epochs,
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
