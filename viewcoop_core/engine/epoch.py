"""One epoch after its clustering: the per-cluster prompt rows and memories from the
new pseudo-labels, a P x K loader under them, ``iters`` optimisation steps.

Shared by the Ray worker loop (``workers.epoch_runner``) and the Ray-free local loop
(``engine.local_loop``), so both train an epoch the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.batches import training_batches
from viewcoop_core.engine.clustering_step import ClusterResult
from viewcoop_core.engine.components import Components
from viewcoop_core.engine.diagnostics import loss_gradient_norms
from viewcoop_core.engine.extract import PromptInputs
from viewcoop_core.engine.train import (
    EpochLabels,
    TrainState,
    refresh_per_cluster_group,
    train_epoch,
)
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.models.prompts import PromptLearner

logger = logging.getLogger(__name__)


@dataclass
class EpochSetup:
    """What every epoch of a run trains with.

    ``batch_size``: this process's share of the P x K batch; ``sampler_seed``: seeds its
    P x K sampler; ``wrap``: re-wraps the model after its parameters change (DDP on a
    Ray worker, nothing locally).
    """

    cfg: ExperimentConfig
    comps: Components
    loss_fn: ViewCoOpLoss
    optimizer: torch.optim.Optimizer
    device: torch.device
    batch_size: int
    sampler_seed: int
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module


def text_has_identity(learner: PromptLearner, prev_labels: Tensor | None) -> bool:
    """Whether the prompts' text features can tell samples apart by identity.

    Prompts with one context per pseudo-identity (coop, uncoop) have none before the
    first clustering: every sample then gets the same sentence, and clustering those
    text features would make one cluster of everything (every pair a graph edge, L_t a
    one-class loss). Their text pseudo-labels are withheld until then."""
    return prev_labels is not None or not learner.uses_cluster_ids


def enough_clusters(result: ClusterResult, setup: EpochSetup, epoch: int) -> bool:
    """A P x K batch needs P image clusters; a degenerate clustering (all outliers, one
    cluster, too few) skips the epoch's training with a warning, never a crash or NaN."""
    needed = max(2, setup.batch_size // setup.cfg.train.num_instances)
    if result.num_img_clusters >= needed:
        return True
    logger.warning(
        "epoch %d: %d image clusters, fewer than the %d pseudo-identities a batch needs: "
        "no training this epoch (consider a larger cluster.eps or more data)",
        epoch,
        result.num_img_clusters,
        needed,
    )
    return False


def train_on_clustering(
    setup: EpochSetup,
    model: nn.Module,
    result: ClusterResult,
    order: Tensor,
    epoch: int,
    progress: Callable[[int], object] | None = None,
    diagnose: bool = False,
) -> tuple[dict[str, float], Tensor, nn.Module]:
    """Train ``cfg.train.iters`` steps on this epoch's pseudo-labels.

    ``diagnose``: first measure each loss term's gradient norm on the text side and the
    image encoder on one batch (``diagnostics.loss_gradient_norms``).

    Returns (mean loss terms, timings and diagnostics, the image labels int64 [N] the
    prompt rows now belong to, the possibly re-wrapped model)."""
    cfg, comps, core = setup.cfg, setup.comps, setup.comps.model
    labels = torch.tensor(result.y_img, dtype=torch.long)
    core.prompt_learner.on_clusters_changed(result.num_img_clusters)
    if core.prompt_learner.uses_cluster_ids:
        # New per-cluster parameters/buffers: a new optimizer group and a new wrapper.
        refresh_per_cluster_group(setup.optimizer, core)
        model = setup.wrap(core)
    text_targets = (
        result.txt_centroids_by_img
        if setup.loss_fn.text_targets_are_image_clusters
        else result.txt_centroids
    )
    setup.loss_fn.reset(
        torch.tensor(result.img_centroids, device=setup.device),
        torch.tensor(text_targets, device=setup.device),
    )
    if setup.loss_fn.graph_over_all:
        if result.img_features is None:
            raise ValueError(
                "loss.graph_scope 'all' needs the epoch's image features: build the "
                "ClusteringStep with keep_image_features=True"
            )
        setup.loss_fn.reset_instances(torch.tensor(result.img_features, device=setup.device))
    y_proxy = None
    if setup.loss_fn.uses_camera_proxies:
        if result.y_proxy is None:
            raise ValueError("loss.camera_proxies > 0 needs the clustering step to know cameras")
        setup.loss_fn.reset_proxies(
            torch.tensor(result.proxy_centroids, device=setup.device),
            torch.tensor(result.proxy_cams, device=setup.device),
        )
        y_proxy = torch.tensor(result.y_proxy, dtype=torch.long)
    loader = training_batches(
        comps,
        result.y_img,
        setup.batch_size,
        cfg.train,
        seed=setup.sampler_seed,
        epoch=epoch,
        num_workers=cfg.data.num_workers,
    )
    state = TrainState(
        model,
        setup.loss_fn,
        setup.optimizer,
        setup.device,
        tau=tuple(cfg.graph.tau),
        amp=cfg.train.amp,
        with_text=core.train_text,
    )
    epoch_labels = EpochLabels(labels, torch.tensor(result.y_txt, dtype=torch.long), y_proxy)
    prompts = PromptInputs(comps.view_percent, None, order)
    metrics: dict[str, float] = {}
    if diagnose:
        batch = next(iter(loader))
        metrics.update(
            loss_gradient_norms(core, setup.loss_fn, batch, epoch_labels, prompts, state.tau)
        )
    metrics.update(train_epoch(state, loader, epoch_labels, prompts, progress))
    return metrics, labels, model
