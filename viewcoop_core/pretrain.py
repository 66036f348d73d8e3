"""Contrastive image-text pretraining of a small CLIP on captioned synthetic vehicles.

The paper starts from a pretrained CLIP: its image features already separate colours,
vehicle types and viewpoints because image-text pretraining taught them to. A randomly
initialised backbone has no such knowledge, so its first pseudo-labels are unrelated
to identity and the unsupervised loop never starts. Real CLIP weights cannot be
downloaded everywhere (the CPU demo), so this module gives the tiny architecture the
same kind of prior at small scale: CLIP's symmetric InfoNCE on synthetic vehicle
images paired with captions of their body type, colour, marks and dominant view.

The pretraining set is drawn by ``viewcoop_core.data.synthetic.make_synthetic`` with
its own seed (default 1000; the demo's re-id set uses 0), so its identities are new
random draws: no identity, camera style or image of the re-id set is seen here.

``ensure_pretrained_tiny_clip`` draws the set and trains once, caching the weights
under a name derived from every parameter; ``build_clip(name, pretrained=path)`` loads
them. ``python -m viewcoop_core.pretrain --help`` also probes the weights on a re-id
set (zero-training mAP and pseudo-label ARI, against random init).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from viewcoop_core.data.masks import load_mask
from viewcoop_core.data.synthetic import MASK_DIR, META_FILE, SPLIT_DIRS, ensure_synthetic
from viewcoop_core.data.transforms import build_test_transform, build_train_transform
from viewcoop_core.models.clip import (
    TINY_MODEL_NAME,
    ClipBundle,
    build_clip,
    encode_text_embeddings,
)
from viewcoop_core.views import VIEW_NAMES, view_counts

logger = logging.getLogger(__name__)

# Bump when captions, the loss or the data selection change: it is part of the cache key.
PRETRAIN_FORMAT_VERSION = 1

# The generator's colour names are already plain words except these.
_COLOUR_WORDS = {"sky": "light blue", "red_blue": "red and blue"}
_BODY_WORDS = {"suv": "SUV"}
_ROOF_WORDS = {"rack": "roof rack", "light_bar": "light bar", "roof_box": "roof box"}
_VIEW_PHRASES = {
    "front": "seen from the front",
    "back": "seen from behind",
    "side": "seen from the side",
    "top": "seen from above",
}
# Splits whose images are pretraining data; "query" holds byte copies of gallery images.
_IMAGE_SPLITS = ("train", "gallery")
# open_clip's training clamps the learnt temperature at 100.
_MAX_LOGIT_SCALE = math.log(100.0)
_WARMUP_FRACTION = 0.1
# Arguments of pretrain_clip that say where, not what: left out of the cache key.
_NOT_TRAINING_PARAMETERS = ("data_root", "out_path", "device")

# The pretraining set and budget of the CPU demo (see ensure_pretrained_tiny_clip):
# ~1,900 images, ~50 epochs in 2.5 minutes on 2 cores. Many cameras matter most: the
# re-id set is seen through cameras (light, colour cast, background, blur) never met
# here, and at equal image counts 24 camera styles generalise far better than 8 or 12.
DEFAULT_NUM_IDS = 80
DEFAULT_NUM_CAMERAS = 24
DEFAULT_IMAGES_PER_CAMERA = 1
DEFAULT_MAX_SECONDS = 150.0


# ----------------------------------------------------------------------------- captions


def colour_word(name: str) -> str:
    """Caption word for one of the generator's colour names (``"sky"`` -> ``"light blue"``)."""
    return _COLOUR_WORDS.get(name, name.replace("_", " "))


def _article(phrase: str) -> str:
    return "an" if phrase[0].lower() in "aeiou" else "a"


def _mark_phrases(attributes: Mapping) -> list[str]:
    """The visible marks of one identity, each as a noun phrase with its colour.

    The windshield sticker's side is left out on purpose: training flips images
    horizontally, which would turn a left sticker into a right one.
    """
    marks = []
    stripe = attributes.get("stripe")
    if stripe is not None:
        colour = colour_word(attributes["stripe_colour"])
        single = f"{_article(colour)} {colour} side stripe"
        marks.append(f"double {colour} side stripes" if stripe == "double" else single)
    roof_item = attributes.get("roof_item")
    if roof_item is not None:
        phrase = f"{colour_word(attributes['roof_colour'])} {_ROOF_WORDS[roof_item]}"
        marks.append(f"{_article(phrase)} {phrase}")
    sticker = attributes.get("sticker")
    if sticker is not None:
        place = "rear window" if sticker == "rear" else "windshield"
        phrase = f"{colour_word(attributes['sticker_colour'])} {place} sticker"
        marks.append(f"{_article(phrase)} {phrase}")
    marks.append(_wheel_phrase(attributes["wheel_style"], colour_word(attributes["hub_colour"])))
    return marks


def _wheel_phrase(style: str, hub: str) -> str:
    """Wheels as drawn: "disc" a hub-coloured disc, "spoke" with five spokes, "dark" a
    dark rim around a small hub-coloured centre."""
    if style == "dark":
        return f"dark wheels with {hub} centres"
    return f"{hub} {'spoked' if style == 'spoke' else 'disc'} wheels"


def caption_for(attributes: Mapping, view: str | None) -> str:
    """One English sentence describing a vehicle and the side it is seen from.

    Args:
        attributes: one entry of ``meta.json["identities"]`` (a ``VehicleAttributes``
            as a dict): ``body_type``, ``colour_name``, ``cargo_colour``, ``stripe``,
            ``stripe_colour``, ``roof_item``, ``roof_colour``, ``sticker``,
            ``sticker_colour``, ``wheel_style``, ``hub_colour``.
        view: the dominant view, one of ``front``, ``back``, ``side``, ``top``, or
            ``None`` to leave the viewpoint out.

    Returns:
        e.g. ``"a photo of a red sedan with a yellow side stripe, a black roof rack and
        silver spoked wheels, seen from the front."``
    """
    missing = [key for key in ("body_type", "colour_name") if key not in attributes]
    if missing:
        raise KeyError(f"vehicle attributes lack {missing}; expected a meta.json identity entry")
    if view is not None and view not in _VIEW_PHRASES:
        raise ValueError(f"view={view!r}: expected one of {list(_VIEW_PHRASES)} or None")
    body = _BODY_WORDS.get(attributes["body_type"], attributes["body_type"])
    subject = f"{colour_word(attributes['colour_name'])} {body}"
    marks = _mark_phrases(attributes)
    if attributes["body_type"] == "truck":
        marks.insert(
            0,
            f"{_article(attributes['cargo_colour'])} "
            f"{colour_word(attributes['cargo_colour'])} cargo box",
        )
    described = marks[0] if len(marks) == 1 else f"{', '.join(marks[:-1])} and {marks[-1]}"
    sentence = f"a photo of {_article(subject)} {subject} with {described}"
    if view is not None:
        sentence += f", {_VIEW_PHRASES[view]}"
    return sentence + "."


def dominant_view(mask: np.ndarray) -> str | None:
    """The view (front/back/side/top) covering most vehicle pixels of a view mask.

    ``mask`` is uint8 [H, W] with values 0..4; returns ``None`` without foreground.
    Ties go to the earlier name in ``VIEW_NAMES``.
    """
    counts = view_counts(mask, patch_size=None, image_size=mask.shape)
    if counts.sum() == 0:
        return None
    return VIEW_NAMES[int(np.argmax(counts))]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CaptionedImage:
    """One pretraining image, its identity and its two captions.

    ``caption`` names the image's dominant view (``view``, from its mask);
    ``identity_caption`` is the same sentence without it, true of every image of the
    vehicle.
    """

    path: str
    vid: int
    view: str | None
    caption: str
    identity_caption: str


def read_captioned_images(data_root: str | os.PathLike) -> list[CaptionedImage]:
    """Every train and gallery image of a synthetic set, captioned from ``meta.json``."""
    root = Path(data_root).expanduser()
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} does not exist: pretraining needs a set written by "
            "viewcoop_core.data.synthetic.make_synthetic (image_train/, image_test/, "
            "masks/ and meta.json with per-identity attributes)"
        )
    meta = json.loads(meta_path.read_text())
    identities = {int(entry["vid"]): entry for entry in meta["identities"]}
    pairs = []
    for record in meta["images"]:
        if record["split"] not in _IMAGE_SPLITS:
            continue
        image_path = root / SPLIT_DIRS[record["split"]] / record["name"]
        view = dominant_view(load_mask(root / MASK_DIR / f"{image_path.stem}.png"))
        attributes = identities[int(record["vid"])]
        pairs.append(
            CaptionedImage(
                path=str(image_path),
                vid=int(record["vid"]),
                view=view,
                caption=caption_for(attributes, view),
                identity_caption=caption_for(attributes, None),
            )
        )
    if not pairs:
        raise ValueError(f"{meta_path} lists no train or gallery images")
    return pairs


def _load_images(paths: Sequence[str]) -> list[Image.Image]:
    """Decode every image once; the whole pretraining set fits in memory (~50 KB each)."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


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
    images = _load_images([pair.path for pair in pairs])
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


# ----------------------------------------------------------------------------- cache


def _cache_key(parameters: Mapping) -> str:
    text = json.dumps(parameters, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _training_parameters(image_size: int, train_kwargs: Mapping) -> dict:
    """Every ``pretrain_clip`` keyword that shapes the weights, defaults filled in.

    Filling in the defaults makes the cache key change when a default changes.
    """
    signature = inspect.signature(pretrain_clip)
    fixed = {"model_name": TINY_MODEL_NAME, "image_size": image_size}
    allowed = [
        name
        for name in signature.parameters
        if name not in _NOT_TRAINING_PARAMETERS and name not in fixed
    ]
    unknown = sorted(set(train_kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unknown pretraining arguments {unknown}; allowed: {allowed}")
    defaults = {name: signature.parameters[name].default for name in allowed}
    return {**defaults, **train_kwargs, **fixed}


def ensure_pretrained_tiny_clip(
    cache_dir: str | os.PathLike,
    num_ids: int = DEFAULT_NUM_IDS,
    num_cameras: int = DEFAULT_NUM_CAMERAS,
    seed: int = 1000,
    images_per_camera: int = DEFAULT_IMAGES_PER_CAMERA,
    image_size: int = 128,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    device: str = "cpu",
    **train_kwargs,
) -> Path:
    """Weights of ``viewcoop-tiny`` pretrained on a synthetic set; trained once, then cached.

    Draws ``make_synthetic(num_ids, num_cameras, seed, images_per_camera, image_size)``
    into ``cache_dir/pretrain-data/<parameters>`` and trains with ``pretrain_clip``
    (its other keywords in ``train_kwargs``: ``epochs``, ``batch_size``, ``lr``, ...).
    ``max_seconds`` bounds drawing plus training: training gets what drawing left.

    The weights file ``clip-viewcoop-tiny-<key>.pt`` hashes every generation and
    training parameter (defaults included), so changing any of them trains anew; the
    sidecar ``<same name>.json`` records them with the training summary. A second call
    with the same arguments returns at once.

    Keep ``seed`` different from the re-id set's seed: the same seed would draw the
    same identities, and the backbone would have seen the evaluation vehicles.
    """
    start = time.perf_counter()
    generation = {
        "num_ids": num_ids,
        "num_cameras": num_cameras,
        "seed": seed,
        "images_per_camera": images_per_camera,
        "image_size": [image_size, image_size],
    }
    training = _training_parameters(image_size, {**train_kwargs, "max_seconds": max_seconds})
    parameters = {"format": PRETRAIN_FORMAT_VERSION, "data": generation, "training": training}
    cache = Path(cache_dir).expanduser()
    weights = cache / f"clip-{TINY_MODEL_NAME}-{_cache_key(parameters)}.pt"
    sidecar = weights.with_suffix(".json")
    if weights.is_file() and sidecar.is_file():
        logger.info("using cached pretrained CLIP weights %s", weights)
        return weights
    data_dir = (
        cache
        / "pretrain-data"
        / f"ids{num_ids}-cams{num_cameras}-ipc{images_per_camera}-px{image_size}-seed{seed}"
    )
    ensure_synthetic(data_dir, **generation)
    remaining = (
        None if max_seconds is None else max(0.0, max_seconds - (time.perf_counter() - start))
    )
    summary = pretrain_clip(
        data_dir, weights, **{**training, "max_seconds": remaining}, device=device
    )
    # Written last: the pair (weights, sidecar) marks a finished run.
    sidecar.write_text(json.dumps({"parameters": parameters, "summary": asdict(summary)}, indent=1))
    return weights


# ----------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ClusterProbe:
    """DBSCAN pseudo-labels of the train features against the true identities."""

    eps: float
    k1: int
    adjusted_rand_index: float
    num_clusters: int
    outlier_fraction: float


@dataclass(frozen=True)
class ReidProbe:
    """How far a backbone is from re-id before any re-id training."""

    mAP: float
    rank1: float
    num_train_ids: int
    clustering: tuple[ClusterProbe, ...]


@torch.no_grad()
def extract_image_features(
    bundle: ClipBundle, paths: Sequence[str], batch_size: int = 128
) -> Tensor:
    """L2-normalised image features float32 [N, D] of ``paths`` (test transform)."""
    model = bundle.model.eval()
    device = next(model.parameters()).device
    side = (bundle.image_size, bundle.image_size)
    transform = build_test_transform(side, bundle.mean, bundle.std)
    features = []
    for start in range(0, len(paths), batch_size):
        pixels = torch.stack(
            [transform(image) for image in _load_images(paths[start : start + batch_size])]
        )
        features.append(F.normalize(model.encode_image(pixels.to(device)).float(), dim=-1).cpu())
    return torch.cat(features)


def reid_probe(
    bundle: ClipBundle,
    data_root: str | os.PathLike,
    cluster_settings: Sequence[tuple[float, int]] = ((0.6, 20),),
    min_samples: int = 4,
    k2: int = 6,
) -> ReidProbe:
    """Zero-training re-id quality of ``bundle``'s image features on a synthetic set.

    mAP / rank-1 rank the gallery for each query by cosine distance (VeRi protocol);
    for each ``(eps, k1)`` in ``cluster_settings`` the train features are clustered
    with ``viewcoop_core.clustering.pseudo_labels`` (sklearn DBSCAN) and compared with
    the true ids by the adjusted Rand index (outliers count as one extra label).
    """
    from sklearn.metrics import adjusted_rand_score

    from viewcoop_core.clustering import pseudo_labels
    from viewcoop_core.data.datasets import load_synthetic
    from viewcoop_core.metrics import pairwise_distance, rank_metrics

    dataset = load_synthetic(data_root)
    query = extract_image_features(bundle, [s.path for s in dataset.query])
    gallery = extract_image_features(bundle, [s.path for s in dataset.gallery])
    ranking = rank_metrics(
        pairwise_distance(query, gallery),
        [s.pid for s in dataset.query],
        [s.pid for s in dataset.gallery],
        [s.camid for s in dataset.query],
        [s.camid for s in dataset.gallery],
    )
    train = extract_image_features(bundle, [s.path for s in dataset.train])
    true_ids = np.array([s.pid for s in dataset.train])
    clustering = []
    for eps, k1 in cluster_settings:
        labels = pseudo_labels(
            train, eps=eps, min_samples=min_samples, k1=k1, k2=k2, backend="sklearn"
        )
        clustering.append(
            ClusterProbe(
                eps=eps,
                k1=k1,
                adjusted_rand_index=float(adjusted_rand_score(true_ids, labels)),
                num_clusters=int(labels.max()) + 1,
                outlier_fraction=float(np.mean(labels < 0)),
            )
        )
    return ReidProbe(
        mAP=ranking["mAP"],
        rank1=float(ranking["cmc"][0]),
        num_train_ids=len(set(true_ids.tolist())),
        clustering=tuple(clustering),
    )


def _log_probe(name: str, probe: ReidProbe) -> None:
    logger.info("%s: zero-training mAP %.4f, rank-1 %.4f", name, probe.mAP, probe.rank1)
    for c in probe.clustering:
        logger.info(
            "%s: eps %.2f k1 %2d -> ARI %.3f, %d clusters (true ids %d), %.0f %% outliers",
            name,
            c.eps,
            c.k1,
            c.adjusted_rand_index,
            c.num_clusters,
            probe.num_train_ids,
            100 * c.outlier_fraction,
        )


def _default(name: str):
    return inspect.signature(pretrain_clip).parameters[name].default


def main(argv: Sequence[str] | None = None) -> None:
    """Pretrain (or reuse) the tiny CLIP, optionally probing it against random init."""
    parser = argparse.ArgumentParser(
        prog="python -m viewcoop_core.pretrain", description=main.__doc__
    )
    parser.add_argument("--cache-dir", required=True, help="where the set and weights are cached")
    parser.add_argument("--num-ids", type=int, default=DEFAULT_NUM_IDS)
    parser.add_argument("--num-cameras", type=int, default=DEFAULT_NUM_CAMERAS)
    parser.add_argument("--images-per-camera", type=int, default=DEFAULT_IMAGES_PER_CAMERA)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the pretraining set")
    parser.add_argument("--epochs", type=int, default=_default("epochs"))
    parser.add_argument("--batch-size", type=int, default=_default("batch_size"))
    parser.add_argument("--lr", type=float, default=_default("lr"))
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help="cap on drawing the set plus training; 0 for none",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--probe-data", help="a make_synthetic re-id set to probe the weights on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    weights = ensure_pretrained_tiny_clip(
        args.cache_dir,
        num_ids=args.num_ids,
        num_cameras=args.num_cameras,
        seed=args.seed,
        images_per_camera=args.images_per_camera,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_seconds=args.max_seconds if args.max_seconds > 0 else None,
    )
    if args.probe_data is None:
        return
    settings = [(eps, k1) for eps in (0.5, 0.6) for k1 in (10, 20)]
    torch.manual_seed(0)
    for name, pretrained in (("random init", None), ("pretrained", str(weights))):
        bundle = build_clip(TINY_MODEL_NAME, pretrained=pretrained, image_size=128)
        _log_probe(name, reid_probe(bundle, args.probe_data, settings))


if __name__ == "__main__":
    main()
