"""Training checkpoints and RNG state: one ``state.pt`` per checkpoint folder, and
``restore_model``, the one way a checkpoint goes back into a model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(directory: str | Path, **state: Any) -> Path:
    """Write ``state`` (model, optimizer, scheduler, epoch, config, rng, mlflow_run_id, y_img)."""
    path = Path(directory) / CHECKPOINT_FILE
    torch.save(state, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state of a checkpoint folder (or of its ``state.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: expected a folder holding {CHECKPOINT_FILE}"
        )
    # Our own files hold numpy RNG state and labels besides tensors, so not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_model(model, state: dict[str, Any]) -> None:
    """Load a checkpoint's weights into a freshly built ``ViewCoOpModel``.

    Per-cluster prompt rows (coop, uncoop) are sized by the clustering they were trained
    on, so the learner is resized to the checkpoint's labels (``y_img``) first.
    """
    labels = state.get("y_img")
    if labels is not None:
        model.prompt_learner.on_clusters_changed(int(np.max(labels)) + 1)
    model.load_state_dict(state["model"])
