"""The whole training loop in one process, without Ray: extract -> cluster -> train ->
evaluate, epoch after epoch, with the same engine stages the Ray workers run.

For experiments on one machine (the method's ablations, the benchmark of Ray Train's
overhead) and for GPU machines without Ray. ``train_locally`` returns one row of
metrics per epoch (epoch 0: the backbone before training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.batches import extraction_batches
from viewcoop_core.engine.checkpoint import seed_everything
from viewcoop_core.engine.clustering_step import ClusteringStep
from viewcoop_core.engine.components import build_components, build_loss
from viewcoop_core.engine.epoch import (
    EpochSetup,
    enough_clusters,
    text_has_identity,
    train_on_clustering,
)
from viewcoop_core.engine.evaluate import evaluation_row
from viewcoop_core.engine.extract import PromptInputs, extract_features
from viewcoop_core.engine.train import (
    apply_learning_rates,
    build_optimizer,
    epoch_clause_order,
    extraction_clause_order,
    nonfinite_terms,
)

logger = logging.getLogger(__name__)


def train_locally(
    cfg: ExperimentConfig,
    device: str | torch.device = "cpu",
    diagnostics: bool = True,
    on_epoch: Callable[[dict[str, float]], object] | None = None,
    true_image_labels: bool = False,
    true_text_labels: bool = False,
) -> list[dict[str, float]]:
    """Train ``cfg`` for ``cfg.train.epochs`` epochs in this process; one row per epoch.

    Rows hold the epoch, the evaluation (every ``eval_every`` epochs, the last, and 0),
    the clustering statistics, the mean loss terms and, with ``diagnostics``, the
    feature diagnostics and per-term gradient norms. ``on_epoch`` sees each row as it
    is made. ``true_image_labels`` / ``true_text_labels``: train on the true ids instead of
    the image / text clusters (diagnostic ceilings; ``ClusteringStep``). Raises
    ``FloatingPointError`` when a loss term turns non-finite.
    """
    device = torch.device(device)
    seed_everything(cfg.train.seed)
    comps = build_components(cfg, device)
    core = comps.model
    setup = EpochSetup(
        cfg,
        comps,
        build_loss(cfg, comps.bundle.embed_dim).to(device),
        build_optimizer(core, cfg.optim),
        device,
        batch_size=cfg.train.batch_size,
        sampler_seed=cfg.train.seed * 1000,
    )
    true_ids = np.array([s.pid for s in comps.dataset.train])
    camids = np.array([s.camid for s in comps.dataset.train])
    step = ClusteringStep(
        cfg.cluster,
        cfg.graph,
        true_ids,
        camids,
        device=str(device),
        true_image_labels=true_image_labels,
        true_text_labels=true_text_labels,
        keep_image_features=cfg.loss.graph_over_all,
    )
    samples = comps.dataset.train
    prev_labels = None
    order = extraction_clause_order(cfg.prompt, len(samples), 0, cfg.train.seed)
    row = {"epoch": 0.0}
    row.update(
        evaluation_row(
            cfg, comps, device, PromptInputs(comps.view_percent, None, order), diagnostics
        )
    )
    history = [row]
    if on_epoch is not None:
        on_epoch(row)
    model = core
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        apply_learning_rates(setup.optimizer, cfg.optim, epoch)
        order = epoch_clause_order(len(samples), epoch, cfg.train.seed, cfg.prompt.shuffle_clauses)
        extraction_order = extraction_clause_order(cfg.prompt, len(samples), epoch, cfg.train.seed)
        loader = extraction_batches(comps, cfg.train.extract_batch_size, 0)
        prompts = PromptInputs(comps.view_percent, prev_labels, extraction_order)
        indices, img, txt = extract_features(core, loader, device, prompts, amp=cfg.train.amp)
        order_back = np.argsort(indices)
        identity = text_has_identity(core.prompt_learner, prev_labels)
        result = step.run(epoch, img[order_back], txt[order_back], identity)
        row = {"epoch": float(epoch), **result.stats, **result.timings}
        if enough_clusters(result, setup, epoch):
            metrics, prev_labels, model = train_on_clustering(
                setup, model, result, order, epoch, diagnose=diagnostics
            )
            bad = nonfinite_terms(metrics)
            if bad:
                raise FloatingPointError(f"epoch {epoch}: non-finite loss terms {bad}")
            row.update(metrics)
            row["skipped_training"] = 0.0
        else:
            row["skipped_training"] = 1.0
        if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
            prompts = PromptInputs(comps.view_percent, prev_labels, extraction_order)
            row.update(evaluation_row(cfg, comps, device, prompts, diagnostics))
        row["epoch_s"] = time.perf_counter() - start
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history
