"""Everything a run builds once from its config: dataset, CLIP, prompts, model, loss.

The Ray worker loop, ``viewcoop evaluate``, the figures, the benchmarks and the tests
all build through here, so a run's parts are assembled one way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.data.datasets import load_dataset
from viewcoop_core.data.masks import require_view_masks
from viewcoop_core.data.transforms import build_test_transform, build_train_transform
from viewcoop_core.data.types import ReidDataset
from viewcoop_core.engine.device_cache import ImageCaches
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.models.clip import ClipBundle, build_clip
from viewcoop_core.models.model import ViewCoOpModel
from viewcoop_core.models.prompts import build_prompt_learner
from viewcoop_core.views import compute_view_ratios, ratios_to_percent
from viewcoop_core.vocabulary import needs_text, needs_view_ratios

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a worker builds once per run."""

    dataset: ReidDataset
    bundle: ClipBundle
    model: ViewCoOpModel
    view_percent: Tensor  # int64[N, 4], whole percents (front, back, side, top)
    train_transform: Callable
    test_transform: Callable
    # The decoded images when ``train.device_cache`` (``engine.batches`` reads them).
    caches: ImageCaches | None = None


def train_view_percent(
    dataset: ReidDataset, variant: str, patch_size: int | None, image_size: int
) -> Tensor:
    """int64[N, 4] whole-percent view proportions of the training images (zeros when unused)."""
    if not needs_view_ratios(variant):
        return torch.zeros(len(dataset.train), 4, dtype=torch.long)
    require_view_masks(dataset.train, variant)
    ratios = compute_view_ratios(
        [s.mask_path for s in dataset.train], patch_size, (image_size, image_size)
    )
    return torch.as_tensor(ratios_to_percent(ratios), dtype=torch.long)


def build_components(
    cfg: ExperimentConfig, device: torch.device, for_training: bool = True
) -> Components:
    """Dataset, CLIP, prompt learner and transforms; view ratios only when training needs them."""
    dataset = load_dataset(cfg.data)
    bundle = build_clip(cfg.model.name, cfg.model.pretrained, cfg.model.image_size, device=device)
    learner = build_prompt_learner(
        cfg.prompt.variant,
        bundle.model,
        bundle.tokenizer,
        num_ctx=cfg.prompt.num_ctx,
        meta_net_reduction=cfg.prompt.meta_net_reduction,
    )
    model = ViewCoOpModel(bundle.model, learner, train_text=needs_text(cfg.loss.terms)).to(device)
    size = (bundle.image_size, bundle.image_size)
    if for_training:
        view_percent = train_view_percent(
            dataset,
            cfg.prompt.variant,
            cfg.views.patch_pixels(bundle.image_size),
            bundle.image_size,
        )
    else:
        view_percent = torch.zeros(len(dataset.train), 4, dtype=torch.long)
    return Components(
        dataset=dataset,
        bundle=bundle,
        model=model,
        view_percent=view_percent,
        train_transform=build_train_transform(
            size, bundle.mean, bundle.std, crop_p=cfg.train.crop_p
        ),
        test_transform=build_test_transform(size, bundle.mean, bundle.std),
        caches=(
            ImageCaches(dataset, size, bundle.mean, bundle.std, device)
            if cfg.train.device_cache
            else None
        ),
    )


def build_loss(
    cfg: ExperimentConfig,
    num_features: int,
    gather: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> ViewCoOpLoss:
    """Eq. 9 with the config's terms; ``gather`` shares memory updates across DDP ranks."""
    return ViewCoOpLoss(num_features, cfg.loss, gather=gather)
