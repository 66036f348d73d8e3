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

from viewcoop_core.config import DataConfig, ExperimentConfig
from viewcoop_core.data.datasets import build_dataset
from viewcoop_core.data.transforms import build_test_transform, build_train_transform
from viewcoop_core.data.types import ReidDataset
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


def load_dataset(data: DataConfig) -> ReidDataset:
    """The configured dataset, with its view masks attached where a folder is given."""
    kwargs = {}
    if data.dataset == "vehicleid":
        kwargs["test_size"] = data.vehicleid_test_size
    if data.masks_dir:
        kwargs["masks_dir"] = data.masks_dir
    return build_dataset(data.dataset, data.root, **kwargs)


def train_view_percent(
    dataset: ReidDataset, variant: str, patch_size: int | None, image_size: int
) -> Tensor:
    """int64[N, 4] whole-percent view proportions of the training images (zeros when unused)."""
    if not needs_view_ratios(variant):
        return torch.zeros(len(dataset.train), 4, dtype=torch.long)
    missing = [s.path for s in dataset.train if s.mask_path is None]
    if missing:
        raise FileNotFoundError(
            f"prompt variant {variant!r} needs a view mask for every training image; "
            f"{len(missing)} of {len(dataset.train)} have none (first: {missing[0]}). "
            "Set data.masks_dir to a folder of <image stem>.png masks (0 background, 1 front, "
            "2 back, 3 top, 4 side) or use a prompt variant without view clauses."
        )
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
        cfg.prompt.variant, bundle.model, bundle.tokenizer, num_ctx=cfg.prompt.num_ctx
    )
    model = ViewCoOpModel(bundle.model, learner, train_text=needs_text(cfg.loss.terms)).to(device)
    size = (bundle.image_size, bundle.image_size)
    if for_training:
        view_percent = train_view_percent(
            dataset, cfg.prompt.variant, cfg.views.patch_pixels, bundle.image_size
        )
    else:
        view_percent = torch.zeros(len(dataset.train), 4, dtype=torch.long)
    return Components(
        dataset=dataset,
        bundle=bundle,
        model=model,
        view_percent=view_percent,
        train_transform=build_train_transform(size, bundle.mean, bundle.std),
        test_transform=build_test_transform(size, bundle.mean, bundle.std),
    )


def build_loss(
    cfg: ExperimentConfig,
    num_features: int,
    gather: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> ViewCoOpLoss:
    """Eq. 9 with the config's terms; ``gather`` shares memory updates across DDP ranks."""
    return ViewCoOpLoss(
        num_features,
        terms=cfg.loss.terms,
        temperature=cfg.loss.temperature,
        momentum=cfg.loss.momentum,
        margin=cfg.loss.margin,
        gather=gather,
    )
