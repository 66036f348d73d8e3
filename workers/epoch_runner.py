"""One epoch on one Train worker: extract this rank's shard -> the clustering actor ->
the broadcast result -> train ``iters`` P x K batches (all stage logic in the engine)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.batches import extraction_batches
from viewcoop_core.engine.clustering_step import ClusterResult
from viewcoop_core.engine.components import Components
from viewcoop_core.engine.epoch import (
    EpochSetup,
    enough_clusters,
    text_has_identity,
    train_on_clustering,
)
from viewcoop_core.engine.evaluate import evaluation_row
from viewcoop_core.engine.extract import PromptInputs, extract_features, shard_indices
from viewcoop_core.engine.train import epoch_clause_order, extraction_clause_order
from workers import faults
from workers.collectives import cluster_epoch, per_worker_batch, wrap_ddp
from workers.progress import StageBar, find_board

logger = logging.getLogger(__name__)


class EpochRunner:
    """What one worker does each epoch; ``prev_labels`` are the image pseudo-labels the
    model's per-cluster prompt rows (coop, uncoop) were last trained on."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        config: dict[str, Any],
        rank: int,
        world_size: int,
        device: torch.device,
        comps: Components,
        loss_fn,
        actor,
    ):
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.comps, self.loss_fn, self.actor = comps, loss_fn, actor
        self.run_dir = Path(config["run_dir"])
        self.labels_dir = self.run_dir / "pseudo_labels" if cfg.train.save_labels else None
        self.batch = per_worker_batch(cfg.train.batch_size, cfg.train.num_instances, world_size)
        self.extract_ids = shard_indices(len(comps.dataset.train), rank, world_size)
        self.diagnose = cfg.train.diagnostics and rank == 0

    def evaluate(self, prev_labels: torch.Tensor | None, epoch: int) -> dict[str, float]:
        """mAP and ranks of the image encoder on the test protocol, and the diagnostics of
        the training set's features under this epoch's prompts (rank 0 calls it)."""
        cfg, comps = self.cfg, self.comps
        order = extraction_clause_order(cfg.prompt, len(comps.dataset.train), epoch, cfg.train.seed)
        prompts = PromptInputs(comps.view_percent, prev_labels, order)
        return evaluation_row(cfg, comps, self.device, prompts, self.diagnose)

    def extract(self, epoch: int, prev_labels: torch.Tensor | None, order: torch.Tensor):
        """This rank's shard: (indices, image features, text features) of its images."""
        cfg, comps = self.cfg, self.comps
        loader = extraction_batches(
            comps, cfg.train.extract_batch_size, cfg.data.num_workers, self.extract_ids
        )
        with self.progress_bar(f"epoch {epoch} extract", len(self.extract_ids), "img") as bar:
            return extract_features(
                comps.model,
                loader,
                self.device,
                PromptInputs(comps.view_percent, prev_labels, order),
                amp=cfg.train.amp,
                progress=bar,
            )

    def cluster(self, epoch: int, prev_labels: torch.Tensor | None, order: torch.Tensor):
        """Extract, hand the shards to the actor and read the broadcast ``ClusterResult``
        (text pseudo-labels withheld while the prompts carry no identity:
        ``engine.epoch.text_has_identity``)."""
        start = time.perf_counter()
        indices, img, txt = self.extract(epoch, prev_labels, order)
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        text_identity = text_has_identity(self.comps.model.prompt_learner, prev_labels)
        result = cluster_epoch(
            self.actor, epoch, self.rank, self.world_size, (indices, img, txt), text_identity
        )
        timings = {"extract_s": extract_s, "cluster_wait_s": time.perf_counter() - start}
        self.save_labels(epoch, result)
        return result, timings

    def epoch(self, epoch, model, optimizer, prev_labels):
        """One epoch. Returns (metrics, the image labels the prompt rows now belong to,
        the possibly re-wrapped model). A skipped epoch keeps ``prev_labels``: the model
        was not trained on the new clustering."""
        cfg, comps = self.cfg, self.comps
        order = epoch_clause_order(
            len(comps.dataset.train), epoch, cfg.train.seed, cfg.prompt.shuffle_clauses
        )
        extraction_order = extraction_clause_order(
            cfg.prompt, len(comps.dataset.train), epoch, cfg.train.seed
        )
        result, timings = self.cluster(epoch, prev_labels, extraction_order)
        metrics = {"epoch": epoch, **timings, **result.stats, **result.timings}
        faults.worker_exit(epoch, self.rank, self.run_dir)
        setup = EpochSetup(
            cfg,
            comps,
            self.loss_fn,
            optimizer,
            self.device,
            batch_size=self.batch,
            sampler_seed=cfg.train.seed * 1000 + self.rank,
            wrap=wrap_ddp,
        )
        if not enough_clusters(result, setup, epoch):
            metrics["skipped_training"] = 1.0
            return metrics, prev_labels, model
        faults.poison_parameters(comps.model, epoch)
        with self.progress_bar(f"epoch {epoch} train", cfg.train.iters, "it") as bar:
            trained, labels, model = train_on_clustering(
                setup, model, result, order, epoch, bar, diagnose=self.diagnose
            )
        metrics.update(trained)
        metrics["skipped_training"] = 0.0
        return metrics, labels, model

    @contextlib.contextmanager
    def progress_bar(self, desc: str, total: int, unit: str):
        """Rank 0's progress, drawn by the driver (``workers/progress.py``); yields an
        ``update(n)``, or None on other ranks, with ``train.progress`` off or no board."""
        board = None
        if self.rank == 0 and self.cfg.train.progress:
            board = find_board(ray.train.get_context().get_experiment_name())
        if board is None:
            yield None
            return
        bar = StageBar(board, desc, total, unit)
        try:
            yield bar.update
        finally:
            bar.close()

    def save_labels(self, epoch: int, result: ClusterResult) -> None:
        if self.labels_dir is None:
            return
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        np.savez(
            self.labels_dir / f"epoch{epoch:03d}_rank{self.rank}.npz",
            y_img=result.y_img,
            y_txt=result.y_txt,
        )
