"""Evaluate a training checkpoint's image encoder on a dataset's test protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from viewcoop_core.config import ExperimentConfig, apply_overrides
from viewcoop_core.engine.checkpoint import read_checkpoint, restore_model
from viewcoop_core.engine.components import build_components
from viewcoop_core.engine.evaluate import evaluate

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
    comps = build_components(cfg, torch_device, for_training=False)
    restore_model(comps.model, state)
    metrics = evaluate(
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
