"""The Ray Train per-worker loop: extract -> cluster (actor) -> train -> evaluate -> report.

``train_loop_per_worker(config)`` is what ``TorchTrainer`` runs on every worker. The
config dict carries the resolved experiment config plus the run's wiring (actor name,
namespace, the MLflow run the driver opened). All stage logic lives in the Ray-free
engine (``viewcoop_core.engine``); this module strings the epochs together and handles
what a cluster does to them: restarts from the last checkpoint, a crashed clustering
actor (``workers.collectives``), non-finite losses (the run stops, naming the term).
"""

from __future__ import annotations

import logging
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.checkpoint import (
    read_checkpoint,
    restore_model,
    seed_everything,
    set_rng_state,
)
from viewcoop_core.engine.components import build_components, build_loss
from viewcoop_core.engine.train import apply_learning_rates, build_optimizer, nonfinite_terms
from workers.collectives import any_rank, gather_across_ranks, wrap_ddp
from workers.epoch_runner import EpochRunner
from workers.reporting import Reporter, checkpoint_state

logger = logging.getLogger(__name__)


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


def resume_state(unlisted: str | None = None) -> dict[str, Any] | None:
    """The latest checkpoint's state when Ray Train restarts or resumes the run; else the
    checkpoint folder the driver found unlisted (``orchestrator.train.unlisted_checkpoint``)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None if unlisted is None else read_checkpoint(unlisted)
    with checkpoint.as_directory() as directory:
        return read_checkpoint(directory)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = ExperimentConfig.from_dict(config["experiment"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    configure_worker_logging(rank, config.get("log_level", logging.WARNING))
    device = ray.train.torch.get_device()
    seed_everything(cfg.train.seed + rank)

    comps = build_components(cfg, device)
    core = comps.model
    state = resume_state(config.get("unlisted_checkpoint"))
    start_epoch, prev_labels = 1, None
    if state is not None:
        start_epoch = int(state["epoch"]) + 1
        if state.get("y_img") is not None:
            prev_labels = torch.as_tensor(state["y_img"], dtype=torch.long)
        restore_model(core, state)
    model = wrap_ddp(core)
    optimizer = build_optimizer(core, cfg.optim)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        logger.info("rank %d resumes at epoch %d", rank, start_epoch)
    loss_fn = build_loss(cfg, comps.bundle.embed_dim, gather=gather_across_ranks).to(device)

    reporter = Reporter(rank, config)
    actor = ray.get_actor(config["actor_name"], namespace=config["namespace"])
    run = EpochRunner(cfg, config, rank, world_size, device, comps, loss_fn, actor)
    try:
        if state is not None:
            reporter.log_checkpointed_metrics(state)
        if rank == 0 and start_epoch == 1 and not reporter.logged(0, "mAP"):
            # Epoch 0: the backbone before any unsupervised training, the reference to beat.
            reporter.log_once(run.evaluate(None, 0), step=0, key="mAP")
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            apply_learning_rates(optimizer, cfg.optim, epoch)
            metrics, labels, model = run.epoch(epoch, model, optimizer, prev_labels)
            bad = nonfinite_terms(metrics)
            if any_rank(bool(bad), device):
                # Nothing of this epoch is kept: the last checkpoint is the last good state.
                logger.error("epoch %d: non-finite loss terms %s; the run stops", epoch, bad)
                reporter.stop_nonfinite(epoch, bad or ["on another rank"], epoch - 1 or None)
                return
            prev_labels = labels
            if rank == 0 and (epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs):
                metrics.update(run.evaluate(prev_labels, epoch))
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            reporter.report(
                epoch, metrics, checkpoint_state(core, optimizer, epoch, prev_labels, cfg, metrics)
            )
        last = cfg.train.epochs
        reporter.finish(cfg, checkpoint_state(core, optimizer, last, prev_labels, cfg, {}))
    except BaseException:
        reporter.fail()
        raise
