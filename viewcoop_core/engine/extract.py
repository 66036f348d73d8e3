"""Feature extraction: one eval-mode loop used by training, evaluation, figures, the
pretraining probe and the benchmarks.

``extract_features`` returns image features and, when prompt inputs are given, the
prompt text features of the same images; ``image_features`` is the image-only form
for a list of samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from viewcoop_core.data.image_dataset import ImageDataset
from viewcoop_core.data.types import ReidSample


@dataclass
class PromptInputs:
    """Per-sample prompt inputs, indexed by the global sample index.

    view_percent: int64 [N, 4] whole percents (zeros for variants without view clauses);
    cluster_ids: int64 [N] pseudo-identities of the prompt (coop/uncoop) or None;
    clause_order: int64 [N, 4] order of the view clauses or None (front, back, side, top).
    """

    view_percent: Tensor
    cluster_ids: Tensor | None = None
    clause_order: Tensor | None = None

    def rows(self, index: Tensor, device: torch.device) -> dict[str, Tensor | None]:
        """The model's keyword inputs for the samples ``index`` [B], on ``device``."""
        return {
            "view_percent": self.view_percent[index].to(device),
            "cluster_ids": None if self.cluster_ids is None else self.cluster_ids[index].to(device),
            "clause_order": None
            if self.clause_order is None
            else self.clause_order[index].to(device),
        }


def shard_indices(num_samples: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's strided share of 0..N-1 (shares differ by at most one sample)."""
    return np.arange(rank, num_samples, world_size)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loader(
    samples: Sequence[ReidSample], transform, batch_size: int, num_workers: int, indices=None
) -> DataLoader:
    """In-order batches of ``samples`` (or of their subset ``indices``)."""
    dataset = ImageDataset(list(samples), transform)
    if indices is not None:
        dataset = Subset(dataset, [int(i) for i in indices])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def encode_images(model: nn.Module, images: Tensor) -> Tensor:
    """L2-normalised CLS features [B, D] of images [B, 3, H, W], from a ``ViewCoOpModel``
    or a bare open_clip CLIP."""
    clip = getattr(model, "clip", model)
    return F.normalize(clip.encode_image(images).float(), dim=-1)


@torch.no_grad()
def extract_on_device(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    prompts: PromptInputs | None = None,
    amp: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Eval-mode features of a loader's images, left on ``device``.

    Returns (indices int64[n] on the CPU, image float32[n, D], text float32[n, D] or
    None, both on ``device``). Nothing is copied back per batch, so on a GPU the loader
    and the encoder overlap instead of waiting for each other.
    """
    was_training = model.training
    model.eval()
    indices, img_feats, txt_feats = [], [], []
    for batch in loader:
        idx = batch["index"]
        images = batch["image"].to(device, non_blocking=True)
        with autocast(device, amp):
            if prompts is None:
                img, txt = encode_images(model, images), None
            else:
                img, txt = model(images, **prompts.rows(idx, device), with_text=True)
        indices.append(torch.as_tensor(idx))
        img_feats.append(img.float())
        if txt is not None:
            txt_feats.append(txt.float())
        if progress is not None:
            progress(len(idx))
    model.train(was_training)
    if not indices:
        raise ValueError("the loader yielded no batch: nothing to extract")
    return (
        torch.cat(indices),
        torch.cat(img_feats),
        torch.cat(txt_feats) if txt_feats else None,
    )


def extract_features(
    model: nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    prompts: PromptInputs | None = None,
    amp: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Eval-mode features of a loader's images, as NumPy arrays (one copy at the end).

    Returns (indices int64[n], image float32[n, D], text float32[n, D] or None). Text
    features are computed when ``prompts`` is given (``model`` is then a
    ``ViewCoOpModel``); ``indices`` index into the per-sample tensors of ``prompts``.
    """
    idx, img, txt = extract_on_device(model, loader, device, prompts, amp, progress)
    return (
        idx.numpy().astype(np.int64),
        img.cpu().numpy().astype(np.float32),
        None if txt is None else txt.cpu().numpy().astype(np.float32),
    )


def image_features(
    model: nn.Module,
    samples: Sequence[ReidSample],
    transform,
    device: torch.device,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: bool = True,
    loader: Iterable[dict] | None = None,
) -> Tensor:
    """float32 [n, D] L2-normalised image features of ``samples`` in order, on ``device``.

    ``loader``: batches of these samples in order (e.g. ``DeviceImageCache.batches``);
    default a ``make_loader`` over the files."""
    if loader is None:
        loader = make_loader(samples, transform, batch_size, num_workers)
    _, img, _ = extract_on_device(model, loader, device, None, amp=amp)
    return img
