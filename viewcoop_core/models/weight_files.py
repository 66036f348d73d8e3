"""CLIP weights files: a user's local file or the shipped weights (``models/shipped.py``),
read without unpickling code (safetensors, or ``torch.load(weights_only=True)``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from open_clip.model import resize_pos_embed
from torch import Tensor, nn

logger = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def resolve_weights_file(pretrained: str | None) -> Path | None:
    """The local weights file ``pretrained`` names, or None when it is a tag (or None)."""
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    looks_like_path = path.suffix in WEIGHT_FILE_SUFFIXES or os.sep in pretrained
    if path.is_file():
        if path.suffix not in WEIGHT_FILE_SUFFIXES:
            raise ValueError(
                f"pretrained={pretrained!r}: weights files must end in one of "
                f"{WEIGHT_FILE_SUFFIXES}"
            )
        return path
    if looks_like_path:
        raise FileNotFoundError(f"pretrained={pretrained!r}: no such weights file")
    return None


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a CLIP state dict from a local file into ``model`` (strict).

    Accepts plain or nested (``"state_dict"``/``"model"``) dicts and DDP ``module.``
    prefixes; resizes the vision positional embedding when the checkpoint was trained
    on another patch grid (e.g. 224 -> 256 pixels, 14x14 -> 16x16 patches).
    """
    path = Path(path)
    state_dict = _unwrap_state_dict(_read_checkpoint(path), path)
    # OpenAI's checkpoints carry these three scalars as entries; open_clip keeps them as
    # constructor arguments.
    for key in ("input_resolution", "context_length", "vocab_size"):
        state_dict.pop(key, None)
    # Half-precision files (the shipped weights are fp16) are read in the model's float
    # dtype: load_state_dict would convert anyway, and the bicubic resize of the
    # positional embedding has no fp16 kernel on the CPU.
    dtype = next(model.parameters()).dtype
    state_dict = {
        key: value.to(dtype) if value.is_floating_point() else value
        for key, value in state_dict.items()
    }
    resize_pos_embed(state_dict, model)
    try:
        incompatible = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # size mismatches
        raise ValueError(f"weights in {path} do not fit this CLIP architecture: {error}") from error
    if incompatible.missing_keys or incompatible.unexpected_keys:
        raise ValueError(
            f"weights in {path} do not match this CLIP architecture: "
            f"missing {incompatible.missing_keys[:8]} "
            f"(of {len(incompatible.missing_keys)}), unexpected "
            f"{incompatible.unexpected_keys[:8]} (of {len(incompatible.unexpected_keys)}); "
            "check `model_name` (e.g. ViT-B-16 vs ViT-B-32)"
        )
    logger.info("loaded CLIP weights from %s", path)


def _read_checkpoint(path: Path) -> object:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(
                f"reading {path} needs the `safetensors` package (pip install safetensors)"
            ) from error
        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as error:
        raise ValueError(
            f"could not read {path} as a state dict with torch.load(weights_only=True) "
            f"({error}). TorchScript archives such as OpenAI's original ViT-B-16.pt are "
            "not plain state dicts: use model_name='ViT-B-16-quickgelu', pretrained='openai', "
            "or re-save the model's state_dict()"
        ) from error


def _unwrap_state_dict(checkpoint: object, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(f"{path} holds no state dict (got {type(checkpoint).__name__})")
    state_dict = dict(checkpoint)
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict
