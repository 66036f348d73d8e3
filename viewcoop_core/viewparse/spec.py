"""The parser's architecture and training settings as plain data (no torch import), so
the CLI and configs can use them without loading torch, and checkpoints store them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from viewcoop_core.vocabulary import NUM_MASK_LABELS

# Defined here, not in losses.py, so that configs and the CLI can check a loss name
# without importing torch.
PARSER_LOSSES = ("ce", "ce+dice")
"""``ce``: pixel cross-entropy alone; ``ce+dice``: plus ``dice_weight`` x the soft Dice loss."""

# CLIP's normalisation constants: vehicle crops are natural images like CLIP's.
DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ParserSpec:
    """The parser's architecture and input convention, stored as plain data in checkpoints.

    ``input_size``: images are resized to ``input_size`` x ``input_size`` pixels; the
    logits are resized back to each image's own size. ``base_channels``: width of the
    first level, doubled at every one of the ``depth`` down-sampling steps.
    ``stem_stride`` 2 (the default): the U-Net works at half resolution and a light
    full-resolution head (``detail_channels``) restores the edges; a training step costs a
    third of stride 1's on a CPU (0.53 vs 1.54 s at batch 16, 128 px, 2 cores).
    """

    input_size: int = 128
    base_channels: int = 16
    depth: int = 4
    stem_stride: int = 2
    detail_channels: int = 8
    num_classes: int = NUM_MASK_LABELS
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD

    def __post_init__(self) -> None:
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"parser stem_stride={self.stem_stride} must be 1, 2 or 4")
        if self.depth < 1 or not self.takes(self.input_size):
            raise ValueError(
                f"parser input_size={self.input_size} must be a positive multiple of "
                f"stem_stride * 2**depth={self.stem_stride * 2**self.depth} "
                f"(depth={self.depth} >= 1)"
            )
        if self.detail_channels < 0:
            raise ValueError(f"parser detail_channels={self.detail_channels} must be >= 0")
        if self.base_channels < 1:
            raise ValueError(f"parser base_channels={self.base_channels} must be >= 1")
        if self.num_classes != NUM_MASK_LABELS:
            raise ValueError(
                f"parser num_classes={self.num_classes}; view masks have {NUM_MASK_LABELS} labels"
            )

    def takes(self, size: int) -> bool:
        """Whether the U-Net takes ``size`` x ``size`` inputs: a positive multiple of its
        coarsest grid step, stem_stride * 2**depth."""
        step = self.stem_stride * 2**self.depth
        return size >= step and size % step == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ParserSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown parser spec fields {unknown}; known: {sorted(known)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)


@dataclass(frozen=True)
class TrainSettings:
    """How long and how the parser trains: ``steps`` batches of ``batch_size`` pairs;
    ``loss`` one of ``PARSER_LOSSES`` (``ce+dice``: cross-entropy + ``dice_weight`` x soft
    Dice over the four views); the cross-entropy weighs face-boundary pixels by 1 +
    ``boundary_weight`` (``losses.py``); the first ``coarse_fraction`` of the steps train
    at half the input size (``train.py``)."""

    # Bounded by steps, never by time. 6,000 steps of 16 pairs with the boundary weight 3:
    # mean IoU 0.83 -> 0.85 (weight 3, batches of 8) -> 0.88 (batches of 16) over 3 seeds;
    # on a 2-core CPU two 1-thread processes of 8 pairs each (``train_parallel.py``) take
    # 12.4 min, where one 2-thread process took 13.9 for batches of 8 (README, "View masks
    # for VeRi-776, ...").
    steps: int = 6000
    batch_size: int = 16
    lr: float = 6e-3
    weight_decay: float = 1e-4
    seed: int = 0
    log_every: int = 100
    loss: str = "ce+dice"
    dice_weight: float = 1.0
    coarse_fraction: float = 0.5
    boundary_weight: float = 3.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"parser training {name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"parser training lr={self.lr} must be > 0")
        if self.loss not in PARSER_LOSSES:
            raise ValueError(f"parser training loss={self.loss!r} must be one of {PARSER_LOSSES}")
        if not 0 <= self.coarse_fraction < 1:
            raise ValueError(
                f"parser training coarse_fraction={self.coarse_fraction} must be in [0, 1)"
            )
        for name in ("dice_weight", "boundary_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"parser training {name}={getattr(self, name)} must be >= 0")
