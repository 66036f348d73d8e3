"""One epoch's stages, as plain functions of plain arguments (no Ray in here).

``workers.train_loop`` strings them together inside Ray Train; a GPU benchmark or a test
can call them directly. Stages: build -> extract (sharded) -> [cluster, elsewhere] ->
train ``iters`` P x K batches -> evaluate.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.data.datasets import build_dataset
from viewcoop_core.data.image_dataset import ImageDataset
from viewcoop_core.data.sampler import PKSampler
from viewcoop_core.data.transforms import build_test_transform, build_train_transform
from viewcoop_core.data.types import ReidDataset, ReidSample
from viewcoop_core.graph import batch_dictionary, graph_edges
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.metrics import pairwise_distance, rank_metrics, summarize, vehicleid_metrics
from viewcoop_core.models.clip import ClipBundle, build_clip
from viewcoop_core.models.prompts import build_prompt_learner, clause_orders
from viewcoop_core.models.viewcoop import ViewCoOpModel
from viewcoop_core.views import compute_view_ratios, ratios_to_percent

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a worker builds once per run."""

    dataset: ReidDataset
    bundle: ClipBundle
    model: ViewCoOpModel
    view_percent: torch.Tensor  # int64[N, 4], whole percents (front, back, side, top)
    train_transform: object
    test_transform: object


PER_CLUSTER_GROUP = 2


def load_dataset(cfg: ExperimentConfig) -> ReidDataset:
    kwargs = {}
    if cfg.data.dataset == "vehicleid":
        kwargs["test_size"] = cfg.data.vehicleid_test_size
    if cfg.data.masks_dir and cfg.data.dataset != "synthetic":
        kwargs["masks_dir"] = cfg.data.masks_dir
    return build_dataset(cfg.data.dataset, cfg.data.root, **kwargs)


def needs_view_ratios(variant: str) -> bool:
    return variant in ("viewcoop", "viewcoop_static")


def train_view_percent(
    dataset: ReidDataset, variant: str, patch_size: int | None, image_size: int
) -> torch.Tensor:
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
    dataset = load_dataset(cfg)
    bundle = build_clip(cfg.model.name, cfg.model.pretrained, cfg.model.image_size, device=device)
    learner = build_prompt_learner(
        cfg.prompt.variant, bundle.model, bundle.tokenizer, num_ctx=cfg.prompt.num_ctx
    )
    train_text = bool({"t", "cm"} & set(cfg.loss.terms))
    model = ViewCoOpModel(bundle.model, learner, train_text=train_text).to(device)
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


def shard_indices(num_samples: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's strided share of 0..N-1 (shares differ by at most one sample)."""
    return np.arange(rank, num_samples, world_size)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_loader(
    samples: Sequence[ReidSample], transform, batch_size: int, num_workers: int, indices=None
):
    dataset = ImageDataset(list(samples), transform)
    if indices is not None:
        dataset = Subset(dataset, [int(i) for i in indices])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def extract_features(
    model: ViewCoOpModel,
    loader: Iterable[dict],
    device: torch.device,
    view_percent: torch.Tensor,
    cluster_ids: torch.Tensor | None,
    clause_order: torch.Tensor | None,
    amp: bool = True,
    with_text: bool = True,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Eval-mode features of a loader's images.

    Returns (indices int64[n], image float32[n, D], text float32[n, D] or None), where
    ``indices`` index into the per-sample tensors (view_percent [N, 4], cluster_ids [N],
    clause_order [N, 4]).
    """
    was_training = model.training
    model.eval()
    indices, img_feats, txt_feats = [], [], []
    for batch in loader:
        idx = batch["index"]
        images = batch["image"].to(device, non_blocking=True)
        with autocast(device, amp):
            img, txt = model(
                images,
                view_percent=view_percent[idx].to(device),
                cluster_ids=None if cluster_ids is None else cluster_ids[idx].to(device),
                clause_order=None if clause_order is None else clause_order[idx].to(device),
                with_text=with_text,
            )
        indices.append(idx.numpy())
        img_feats.append(img.float().cpu().numpy())
        if txt is not None:
            txt_feats.append(txt.float().cpu().numpy())
        if progress is not None:
            progress(len(idx))
    model.train(was_training)
    return (
        np.concatenate(indices),
        np.concatenate(img_feats).astype(np.float32),
        np.concatenate(txt_feats).astype(np.float32) if txt_feats else None,
    )


def build_optimizer(model: ViewCoOpModel, lr: float, prompt_lr: float, weight_decay: float):
    """Adam with three groups: CLIP encoders at ``lr``; prompt learner and its per-cluster
    parameters (coop/uncoop, re-created every epoch, see ``refresh_per_cluster_group``)
    at ``prompt_lr``. The third group may be empty."""
    per_cluster = list(model.prompt_learner.per_cluster_parameters())
    prompt_ids = {id(p) for p in model.prompt_learner.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    cluster_ids = {id(p) for p in per_cluster}
    groups = [
        {"params": [p for p in trainable if id(p) not in prompt_ids], "lr": lr},
        {
            "params": [p for p in trainable if id(p) in prompt_ids and id(p) not in cluster_ids],
            "lr": prompt_lr,
        },
        {"params": [p for p in per_cluster if p.requires_grad], "lr": prompt_lr},
    ]
    return torch.optim.Adam(groups, weight_decay=weight_decay)


def refresh_per_cluster_group(optimizer: torch.optim.Optimizer, model: ViewCoOpModel) -> None:
    """Point the per-cluster group at the learner's new parameters and drop the old state."""
    group = optimizer.param_groups[PER_CLUSTER_GROUP]
    for param in group["params"]:
        optimizer.state.pop(param, None)
    group["params"] = [p for p in model.prompt_learner.per_cluster_parameters() if p.requires_grad]


def train_epoch(
    model: nn.Module,
    loss_fn: ViewCoOpLoss,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[dict],
    device: torch.device,
    y_img: torch.Tensor,
    y_txt: torch.Tensor,
    view_percent: torch.Tensor,
    clause_order: torch.Tensor | None,
    tau: Sequence[int],
    amp: bool = True,
    with_text: bool = True,
    progress: Callable[[int], object] | None = None,
) -> dict[str, float]:
    """``iters`` optimisation steps over P x K batches; returns mean loss terms and images/s.

    ``model`` is what runs the forward (DDP-wrapped or not).
    y_img, y_txt: int64[N] pseudo-labels of this epoch.
    """
    model.train()
    sums: dict[str, float] = defaultdict(float)
    steps, images_seen = 0, 0
    start = time.perf_counter()
    for batch in loader:
        idx = batch["index"]
        images = batch["image"].to(device, non_blocking=True)
        b_img, b_txt = y_img[idx].to(device), y_txt[idx].to(device)
        with autocast(device, amp):
            img, txt = model(
                images,
                view_percent=view_percent[idx].to(device),
                cluster_ids=b_img,
                clause_order=None if clause_order is None else clause_order[idx].to(device),
                with_text=with_text,
            )
        positive = (
            graph_edges(batch_dictionary(b_img, b_txt), tau) if "g" in loss_fn.terms else None
        )
        terms = loss_fn(img.float(), None if txt is None else txt.float(), b_img, b_txt, positive)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for key, value in terms.items():
            sums[key] += float(value.detach())
        steps += 1
        images_seen += len(idx)
        if progress is not None:
            progress(1)
    seconds = time.perf_counter() - start
    means = {key: value / max(steps, 1) for key, value in sums.items()}
    means["train_images_per_s"] = images_seen / max(seconds, 1e-9)
    means["train_s"] = seconds
    return means


def pk_loader(
    samples: Sequence[ReidSample],
    labels: np.ndarray,
    transform,
    batch_size: int,
    num_instances: int,
    iters: int,
    seed: int,
    epoch: int,
    num_workers: int,
) -> DataLoader:
    """``iters`` P x K batches of the training images under this epoch's pseudo-labels."""
    camids = [s.camid for s in samples]
    sampler = PKSampler(
        labels.tolist(),
        camids,
        batch_size=batch_size,
        num_instances=num_instances,
        num_iters=iters,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        ImageDataset(list(samples), transform), batch_sampler=sampler, num_workers=num_workers
    )


def epoch_clause_order(num_samples: int, epoch: int, seed: int, shuffle: bool) -> torch.Tensor:
    """The per-sample order of the four view clauses this epoch (identity order if not shuffled)."""
    if shuffle:
        return clause_orders(num_samples, epoch, seed)
    return torch.arange(4).repeat(num_samples, 1)


@torch.no_grad()
def evaluate(
    core: ViewCoOpModel,
    dataset: ReidDataset,
    transform,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    amp: bool = True,
) -> dict[str, float]:
    """mAP and CMC ranks of the image encoder on the dataset's test protocol."""
    start = time.perf_counter()
    zeros = torch.zeros(
        max(len(dataset.query) + len(dataset.gallery), len(dataset.test)), 4, dtype=torch.long
    )

    def features(samples):
        loader = make_loader(samples, transform, batch_size, num_workers)
        _, img, _ = extract_features(
            core, loader, device, zeros, None, None, amp=amp, with_text=False
        )
        return torch.as_tensor(img, device=device)

    if dataset.protocol == "vehicleid":
        feats = features(dataset.test)
        result = vehicleid_metrics(feats, [s.pid for s in dataset.test])
    else:
        qf, gf = features(dataset.query), features(dataset.gallery)
        result = rank_metrics(
            pairwise_distance(qf, gf),
            [s.pid for s in dataset.query],
            [s.pid for s in dataset.gallery],
            [s.camid for s in dataset.query],
            [s.camid for s in dataset.gallery],
        )
    metrics = summarize(result)
    metrics["eval_s"] = time.perf_counter() - start
    return metrics
