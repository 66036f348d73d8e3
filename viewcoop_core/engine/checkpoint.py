"""Training checkpoints and RNG state: one ``state.pt`` per checkpoint folder, and
``restore_model``, the one way a checkpoint goes back into a model."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"
REQUIRED_KEYS = ("model", "epoch", "config")


class CheckpointError(ValueError):
    """A file that is not a loadable ViewCoOp checkpoint (named in the message)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG state as tensors and plain data (weights-only loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    kind, keys, position, has_gauss, cached = state["numpy"]
    random.setstate(_python_rng_state(state["python"]))
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _python_rng_state(state: Any) -> tuple:
    """random.setstate wants tuples; a round trip through torch.save may give lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _plain(value: Any) -> Any:
    """``value`` with NumPy arrays as tensors and NumPy scalars as Python numbers, so the
    checkpoint holds only what ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def save_checkpoint(directory: str | Path, **state: Any) -> Path:
    """Write ``state`` (model, optimizer, scheduler, epoch, config, rng, mlflow_run_id, y_img)
    as tensors and plain data only; written to a temporary name, then renamed, so a
    crash mid-write never leaves a half checkpoint under the real name."""
    path = Path(directory) / CHECKPOINT_FILE
    partial = path.with_name(path.name + ".partial")
    torch.save(_plain(state), partial)
    os.replace(partial, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state of a checkpoint folder (or of its ``state.pt``), loaded without
    unpickling code (``weights_only=True``).

    Raises ``CheckpointError`` naming the file when it is not a loadable checkpoint: a
    file that would run code (refused, never executed), a truncated or garbage file,
    or a file holding something other than a training state.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: expected a folder holding {CHECKPOINT_FILE}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A refused import of a global (a function or class to call) is what a file that
        # would run code looks like; anything else is a file that is no pickle at all.
        if "unsupported global" in str(error).lower():
            raise CheckpointError(
                f"refusing to load {path}: it holds objects other than tensors and plain "
                "data (loading it would run code from the file; nothing was executed). "
                f"Detail: {_refused_global(error)}"
            ) from error
        raise _unreadable(path, error) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise _unreadable(path, error) from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        got = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a ViewCoOp training checkpoint: expected a dict with keys "
            f"{list(REQUIRED_KEYS)}, missing {missing} (it holds {got})"
        )
    return state


def _first_line(error: BaseException, limit: int) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


def _refused_global(error: BaseException) -> str:
    for line in str(error).splitlines():
        if "unsupported global" in line.lower():
            return line.strip()[:200]
    return _first_line(error, 200)


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable checkpoint (truncated, or not written by torch.save): "
        f"{type(error).__name__}: {_first_line(error, 200)}"
    )


def restore_model(model, state: dict[str, Any]) -> None:
    """Load a checkpoint's weights into a freshly built ``ViewCoOpModel``.

    Per-cluster prompt rows (coop, uncoop) are sized by the clustering they were trained
    on, so the learner is resized to the checkpoint's labels (``y_img``) first.
    """
    labels = state.get("y_img")
    if labels is not None:
        model.prompt_learner.on_clusters_changed(int(torch.as_tensor(labels).max()) + 1)
    model.load_state_dict(state["model"])
