"""The Ray Train per-worker loop: extract -> cluster (actor) -> train -> evaluate -> report.

``train_loop_per_worker(config)`` is what ``TorchTrainer`` runs on every worker. The
config dict carries the resolved experiment config plus the run's wiring (actor name,
namespace, MLflow). All stage logic lives in the Ray-free engine (``viewcoop_core.engine``); this module
only adds the distributed plumbing: object-store hand-off, the broadcast of one result
ref, DDP, checkpoints and reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train.collective import barrier, broadcast_from_rank_zero

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.checkpoint import (
    read_checkpoint,
    restore_model,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from viewcoop_core.engine.clustering_step import ClusterResult
from viewcoop_core.engine.components import Components, build_components, build_loss
from viewcoop_core.engine.evaluate import evaluate
from viewcoop_core.engine.extract import PromptInputs, extract_features, make_loader, shard_indices
from viewcoop_core.engine.results import history_markdown
from viewcoop_core.engine.tracking import RunTracker, metric_history
from viewcoop_core.engine.train import (
    EpochLabels,
    TrainState,
    build_optimizer,
    epoch_clause_order,
    pk_loader,
    refresh_per_cluster_group,
    train_epoch,
)
from viewcoop_core.figures.runs import make_figures
from workers.progress import StageBar, find_board

logger = logging.getLogger(__name__)


def per_worker_batch(batch_size: int, num_instances: int, world_size: int) -> int:
    """Split the global P x K batch over workers, keeping whole identities (multiples of K)."""
    return max(num_instances, (batch_size // world_size) // num_instances * num_instances)


def hand_over_features(actor, epoch: int, rank: int, indices, img, txt) -> None:
    """Put this shard in the object store and give the refs to the clustering actor."""
    refs = [ray.put(indices), ray.put(img), ray.put(txt)]
    ray.get(actor.add_shard.remote(epoch, rank, *refs))


def clustering_broadcast(actor, epoch: int, rank: int, world_size: int) -> ClusterResult:
    """Rank 0 asks the actor to cluster; every rank gets that one result ref and reads it."""
    barrier()  # all shards are in the actor before anyone asks for the clustering
    ref = actor.cluster.remote(epoch, world_size) if rank == 0 else None
    [ref] = broadcast_from_rank_zero([ref])
    return ray.get(ref)


def gather_across_ranks(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (features [B, D], labels [B]) concatenated in rank order (equal B per rank)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return features, labels
    world = torch.distributed.get_world_size()
    feats = [torch.empty_like(features) for _ in range(world)]
    labs = [torch.empty_like(labels) for _ in range(world)]
    torch.distributed.all_gather(feats, features.contiguous())
    torch.distributed.all_gather(labs, labels.contiguous())
    return torch.cat(feats), torch.cat(labs)


def wrap_ddp(core: torch.nn.Module) -> torch.nn.Module:
    """DDP via Ray Train. Every trainable parameter takes part in every step (frozen parts
    have requires_grad off), so no unused-parameter search is needed."""
    return ray.train.torch.prepare_model(core)


def configure_worker_logging(rank: int, level: int = logging.WARNING) -> None:
    """What a worker prints (the driver shows it prefixed with the worker's pid): warnings
    from every rank; at ``level`` INFO (the driver's ``-v``) also rank 0's messages and
    the libraries' (open_clip logs on the root logger, MLflow on its own)."""
    logging.getLogger().setLevel(level)
    for name in ("viewcoop_core", "workers"):
        logging.getLogger(name).setLevel(level if rank == 0 else logging.WARNING)
    logging.getLogger("mlflow").setLevel(level)
    # Ray Train logs every report's full metrics dict at INFO.
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = ExperimentConfig.from_dict(config["experiment"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    configure_worker_logging(rank, config.get("log_level", logging.WARNING))
    device = ray.train.torch.get_device()
    seed_everything(cfg.train.seed + rank)

    comps = build_components(cfg, device)
    core = comps.model
    start_epoch, prev_labels, run_id = 1, None, None
    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = read_checkpoint(directory)
    if state is not None:
        start_epoch, run_id = state["epoch"] + 1, state.get("mlflow_run_id")
        if state.get("y_img") is not None:
            prev_labels = torch.as_tensor(state["y_img"], dtype=torch.long)
        restore_model(core, state)
    model = wrap_ddp(core)
    optimizer = build_optimizer(core, cfg.optim)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.optim.step_size, cfg.optim.gamma)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        logger.info("rank %d resumes at epoch %d", rank, start_epoch)
    loss_fn = build_loss(cfg, comps.bundle.embed_dim, gather=gather_across_ranks).to(device)

    tracker = open_tracker(config, run_id) if rank == 0 else None
    actor = ray.get_actor(config["actor_name"], namespace=config["namespace"])
    run = EpochRunner(cfg, config, rank, world_size, device, comps, loss_fn, actor)
    try:
        if rank == 0 and start_epoch == 1:
            # Epoch 0: the backbone before any unsupervised training, the reference to beat.
            tracker.log_metrics(run.evaluate(), step=0)
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            metrics, prev_labels, model = run.epoch(epoch, model, optimizer, prev_labels)
            scheduler.step()
            if rank == 0 and (epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs):
                metrics.update(run.evaluate())
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            report_epoch(
                epoch, rank, metrics, tracker, core, optimizer, scheduler, prev_labels, cfg
            )
        if tracker is not None:
            finish_run(
                tracker,
                cfg,
                config,
                checkpoint_state(
                    core, optimizer, scheduler, cfg.train.epochs, prev_labels, cfg, tracker
                ),
            )
    except BaseException:
        if tracker is not None:
            tracker.finish(failed=True)
        raise


def open_tracker(config: dict[str, Any], run_id: str | None) -> RunTracker:
    """Rank 0's MLflow run: the checkpoint's run when resuming, else a new one with params."""
    mlflow = config["mlflow"]
    tracker = RunTracker(
        mlflow["tracking_uri"],
        mlflow["experiment"],
        config["run_name"],
        run_id=run_id,
        parent_run_id=mlflow.get("parent_run_id"),
        artifact_root=mlflow.get("artifact_root"),
    )
    if run_id is None:
        tracker.log_params(config["flat_params"])
        if config.get("resolved_config_path"):
            tracker.log_artifact(config["resolved_config_path"])
    return tracker


class EpochRunner:
    """One epoch on one worker: extract shard -> actor -> broadcast -> train."""

    def __init__(self, cfg, config, rank, world_size, device, comps: Components, loss_fn, actor):
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.comps, self.loss_fn, self.actor = comps, loss_fn, actor
        self.labels_dir = (
            Path(config["run_dir"]) / "pseudo_labels" if cfg.train.save_labels else None
        )
        self.batch = per_worker_batch(cfg.train.batch_size, cfg.train.num_instances, world_size)
        self.extract_ids = shard_indices(len(comps.dataset.train), rank, world_size)

    def evaluate(self) -> dict[str, float]:
        """mAP and ranks of the image encoder on the test protocol (rank 0 calls it)."""
        cfg, comps = self.cfg, self.comps
        return evaluate(
            comps.model,
            comps.dataset,
            comps.test_transform,
            self.device,
            cfg.train.extract_batch_size,
            cfg.data.num_workers,
            cfg.train.amp,
        )

    def epoch(self, epoch, model, optimizer, prev_labels):
        """Returns (metrics, this epoch's image labels int64[N], the possibly re-wrapped model)."""
        cfg, comps, core = self.cfg, self.comps, self.comps.model
        samples = comps.dataset.train
        order = epoch_clause_order(len(samples), epoch, cfg.train.seed, cfg.prompt.shuffle_clauses)
        loader = make_loader(
            samples,
            comps.test_transform,
            cfg.train.extract_batch_size,
            cfg.data.num_workers,
            self.extract_ids,
        )
        start = time.perf_counter()
        with self.progress_bar(f"epoch {epoch} extract", len(self.extract_ids), "img") as bar:
            indices, img, txt = extract_features(
                core,
                loader,
                self.device,
                PromptInputs(comps.view_percent, prev_labels, order),
                amp=cfg.train.amp,
                progress=bar,
            )
        metrics: dict[str, Any] = {"epoch": epoch, "extract_s": time.perf_counter() - start}
        start = time.perf_counter()
        hand_over_features(self.actor, epoch, self.rank, indices, img, txt)
        result = clustering_broadcast(self.actor, epoch, self.rank, self.world_size)
        metrics["cluster_wait_s"] = time.perf_counter() - start
        metrics.update(result.stats)
        metrics.update(result.timings)
        self.save_labels(epoch, result)
        labels = torch.tensor(result.y_img, dtype=torch.long)

        needed = max(2, self.batch // cfg.train.num_instances)
        if result.num_img_clusters < needed:
            logger.warning(
                "epoch %d: %d image clusters, fewer than the %d pseudo-identities a batch needs: "
                "no training this epoch (consider a larger cluster.eps or more data)",
                epoch,
                result.num_img_clusters,
                needed,
            )
            metrics["skipped_training"] = 1.0
            return metrics, labels, model
        core.prompt_learner.on_clusters_changed(result.num_img_clusters)
        if core.prompt_learner.uses_cluster_ids:
            # New per-cluster parameters/buffers: new optimizer group and a new DDP wrapper.
            refresh_per_cluster_group(optimizer, core)
            model = wrap_ddp(core)
        self.loss_fn.reset(
            torch.tensor(result.img_centroids, device=self.device),
            torch.tensor(result.txt_centroids, device=self.device),
        )
        loader = pk_loader(
            samples,
            result.y_img,
            comps.train_transform,
            self.batch,
            cfg.train,
            seed=cfg.train.seed * 1000 + self.rank,
            epoch=epoch,
            num_workers=cfg.data.num_workers,
        )
        state = TrainState(
            model,
            self.loss_fn,
            optimizer,
            self.device,
            tau=tuple(cfg.graph.tau),
            amp=cfg.train.amp,
            with_text=core.train_text,
        )
        epoch_labels = EpochLabels(labels, torch.tensor(result.y_txt, dtype=torch.long))
        with self.progress_bar(f"epoch {epoch} train", cfg.train.iters, "it") as bar:
            metrics.update(
                train_epoch(
                    state, loader, epoch_labels, PromptInputs(comps.view_percent, None, order), bar
                )
            )
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


def checkpoint_state(core, optimizer, scheduler, epoch, labels, cfg, tracker) -> dict[str, Any]:
    return {
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "rng": rng_state(),
        "mlflow_run_id": tracker.run_id,
        "y_img": None if labels is None else labels.numpy(),
    }


def finish_run(
    tracker: RunTracker, cfg: ExperimentConfig, config: dict[str, Any], state: dict[str, Any]
) -> None:
    """Rank 0, after the last epoch: results table and paper figures as artifacts; FINISHED."""
    run_dir = Path(config["run_dir"])
    table = run_dir / "results.md"
    table.write_text(history_markdown(metric_history(tracker.tracking_uri, tracker.run_id)))
    tracker.log_artifact(table)
    if cfg.train.figures:
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, **state)
            paths = make_figures(
                directory, run_dir / "figures", max_samples=cfg.train.figure_samples
            )
        for path in paths.values():
            tracker.log_artifact(path, "figures")
        summary = json.loads(paths["summary"].read_text())
        tracker.log_metrics(summary["metrics"], step=state["epoch"])
    tracker.finish()


def report_epoch(epoch, rank, metrics, tracker, core, optimizer, scheduler, labels, cfg) -> None:
    """Every rank reports; rank 0 attaches the checkpoint and writes MLflow."""
    metrics = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, np.floating, np.integer))
    }
    if rank != 0:
        ray.train.report(metrics)
        return
    tracker.log_metrics(metrics, step=epoch)
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(
            directory, **checkpoint_state(core, optimizer, scheduler, epoch, labels, cfg, tracker)
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
