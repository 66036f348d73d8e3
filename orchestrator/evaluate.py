"""Evaluate a training checkpoint's image encoder on a dataset's test protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from viewcoop_core.config import ExperimentConfig, apply_overrides
from workers import epoch as stages
from workers.checkpoint import read_checkpoint

logger = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """mAP, R1, R5, R10 of the checkpoint on its own dataset or on ``dataset``/``root``."""
    state = read_checkpoint(checkpoint)
    tree = state["config"]
    if dataset:
        tree["data"]["dataset"] = dataset
    if root:
        tree["data"]["root"] = root
    cfg = ExperimentConfig.from_dict(apply_overrides(tree, overrides or []))
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    comps = stages.build_components(cfg, torch_device, for_training=False)
    if state.get("y_img") is not None:
        comps.model.prompt_learner.on_clusters_changed(int(state["y_img"].max()) + 1)
    comps.model.load_state_dict(state["model"])
    metrics = stages.evaluate(
        comps.model,
        comps.dataset,
        comps.test_transform,
        torch_device,
        cfg.train.extract_batch_size,
        cfg.data.num_workers,
        cfg.train.amp,
    )
    logger.info("epoch %s checkpoint on %s: %s", state.get("epoch"), cfg.data.dataset, metrics)
    return metrics
