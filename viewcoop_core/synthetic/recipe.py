"""The recipe of the tiny CLIP's pretraining: which synthetic set, how many steps, which
optimisation. One recipe gives the same weights on the same machine; the weights the
project ships (``viewcoop_core/models/weights/``) record the recipe that made them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from viewcoop_core.synthetic.spec import PRETRAIN_SPEC, SyntheticSpec
from viewcoop_core.vocabulary import PROJECT_MODEL_NAMES, TINY_MODEL_NAME


@dataclass(frozen=True)
class PretrainRecipe:
    """Contrastive image-caption pretraining of the project's architecture ``model``
    (``viewcoop-tiny`` or ``viewcoop-small``) from random init on ``spec``'s images.

    Bounded by ``steps`` (never by wall-clock time), batches of ``batch_size`` images,
    AdamW at ``lr`` with warmup and cosine decay, ``weight_decay`` on matrices only; each
    image is described by the caption naming its view with probability
    ``view_caption_p``, else by its identity caption; ``seed`` fixes the initialisation,
    the batch order, the captions drawn and the augmentation.
    """

    spec: SyntheticSpec = field(default_factory=lambda: PRETRAIN_SPEC)
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    view_caption_p: float = 0.25
    seed: int = 0
    model: str = TINY_MODEL_NAME

    def __post_init__(self) -> None:
        if self.model not in PROJECT_MODEL_NAMES:
            raise ValueError(
                f"model={self.model!r} must be one of the project's architectures "
                f"{', '.join(PROJECT_MODEL_NAMES)}"
            )
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(
                f"steps={self.steps} must be >= 1 and batch_size={self.batch_size} >= 2"
            )
        if not 0.0 <= self.view_caption_p <= 1.0:
            raise ValueError(
                f"view_caption_p={self.view_caption_p} must be a probability in [0, 1]"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainRecipe:
        values = dict(data)
        values["spec"] = SyntheticSpec(**values["spec"])
        return cls(**values)
