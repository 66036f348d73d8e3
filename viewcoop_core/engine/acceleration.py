"""The GPU switches of ``TrainConfig`` applied to a run's parts, in one place.

``accelerate(model, train, device)`` compiles the image encoder when ``train.compile``
(in place with ``nn.Module.compile``: the state dict keeps its keys, so checkpoints
load either way; the first steps pay the compilation, which benchmarks exclude as
warm-up). ``image_cache(...)`` builds the device image cache when ``train.device_cache``.
Fused Adam is ``train.build_optimizer``'s; bf16 autocast is ``extract.autocast``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from viewcoop_core.config import TrainConfig
from viewcoop_core.data.types import ReidSample
from viewcoop_core.engine.device_cache import DeviceImageCache

logger = logging.getLogger(__name__)


def accelerate(model: nn.Module, train: TrainConfig, device: torch.device) -> nn.Module:
    """``model`` with its image encoder compiled when ``train.compile`` (any device)."""
    if train.compile:
        clip = getattr(model, "clip", model)
        clip.visual.compile()
        logger.info("torch.compile: image encoder compiled on first use (%s)", device)
    return model


def image_cache(
    samples: Sequence[ReidSample],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    train: TrainConfig,
    device: torch.device,
) -> DeviceImageCache | None:
    """The device image cache of ``samples`` when ``train.device_cache``, else None."""
    if not train.device_cache:
        return None
    return DeviceImageCache(samples, size, mean, std, device)
