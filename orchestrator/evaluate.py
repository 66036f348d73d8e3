"""Evaluate a training checkpoint's image encoder on a dataset's test protocol.

The checks come first and the heavy imports last: the overrides' syntax and the
checkpoint's path before torch is imported, the resolved config and the evaluation
images (``data.preflight``) before open_clip and the model are.
"""

from __future__ import annotations

import logging
from pathlib import Path

from viewcoop_core.config import ExperimentConfig, apply_overrides, parse_override
from viewcoop_core.data.preflight import preflight

logger = logging.getLogger(__name__)


def resolve_evaluation(
    checkpoint: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[ExperimentConfig, dict]:
    """(config, state) of the checkpoint with ``dataset``/``root``/``overrides`` applied,
    its query and gallery images checked."""
    for item in overrides or []:
        parse_override(item)
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a folder holding state.pt")
    from viewcoop_core.engine.checkpoint import read_checkpoint  # torch

    state = read_checkpoint(path)
    tree = state["config"]
    if dataset:
        tree["data"]["dataset"] = dataset
    if root:
        tree["data"]["root"] = root
    # The training run's skip list and storage may not exist here; evaluation needs neither.
    tree["data"]["skip_list"] = None
    cfg = ExperimentConfig.from_dict(apply_overrides(tree, overrides or []))
    preflight(cfg.data, prompt_variant=None, check_train=False)
    return cfg, state


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """mAP, R1, R5, R10 of the checkpoint on its own dataset or on ``dataset``/``root``."""
    cfg, state = resolve_evaluation(checkpoint, dataset, root, overrides)
    import torch

    from viewcoop_core.engine.checkpoint import restore_model
    from viewcoop_core.engine.components import build_components
    from viewcoop_core.engine.evaluate import evaluate

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
