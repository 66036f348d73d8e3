"""The one description of a synthetic set, shared by the generator, the experiment config
(``data.synthetic``), the CLI, the tiny-CLIP pretraining and the benchmarks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SyntheticSpec:
    """What ``make_synthetic`` draws; the same spec gives byte-identical files.

    Ids ``1..T`` train and ``T+1..num_ids`` test, ``T = num_ids - round(num_ids *
    test_fraction)``; every id is seen ``images_per_camera`` times by every camera, and
    each test id gets ``queries_per_id`` queries from distinct cameras. Images are
    ``image_size`` pixels square. ``near_duplicate_fraction`` of the id pairs (v, v + 1)
    in each split (at least one pair) are near-duplicates.

    ``camera_looks``: how many distinct looks (light, colour cast, background, blur,
    resolution, framing) the cameras share; camera ``c`` keeps its own view template but
    takes the look of camera ``c % camera_looks``. ``None`` gives every camera its own
    look, as in real camera networks.
    """

    num_ids: int = 40
    num_cameras: int = 6
    images_per_camera: int = 2
    image_size: int = 128
    seed: int = 0
    camera_looks: int | None = None
    test_fraction: float = 0.5
    queries_per_id: int = 2
    near_duplicate_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_train_ids(self) -> int:
        return self.num_ids - round(self.num_ids * self.test_fraction)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.image_size, self.image_size)

    def replace(self, **changes: Any) -> SyntheticSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field (as ``data.synthetic.<field>``) and what
        is allowed."""
        if not 0.0 < self.test_fraction < 1.0:
            _refuse("test_fraction", self.test_fraction, "a float strictly between 0 and 1")
        num_test = round(self.num_ids * self.test_fraction)
        if self.num_ids < 2 or not 1 <= num_test <= self.num_ids - 1:
            _refuse(
                "num_ids",
                self.num_ids,
                f"an int >= 2 leaving both splits non-empty with test_fraction={self.test_fraction}",
            )
        if self.num_cameras < 1:
            _refuse("num_cameras", self.num_cameras, "an int >= 1")
        if self.images_per_camera < 1:
            _refuse("images_per_camera", self.images_per_camera, "an int >= 1")
        if not 1 <= self.queries_per_id <= self.num_cameras:
            _refuse(
                "queries_per_id",
                self.queries_per_id,
                f"1..num_cameras ({self.num_cameras}): queries come from distinct cameras",
            )
        if self.image_size < 16:
            _refuse("image_size", self.image_size, "an int >= 16 (pixels)")
        if self.camera_looks is not None and not 1 <= self.camera_looks <= self.num_cameras:
            _refuse(
                "camera_looks", self.camera_looks, f"null or 1..num_cameras ({self.num_cameras})"
            )
        if not 0.0 <= self.near_duplicate_fraction <= 1.0:
            _refuse("near_duplicate_fraction", self.near_duplicate_fraction, "a float in [0, 1]")
        if self.seed < 0:
            _refuse("seed", self.seed, "an int >= 0")


PRETRAIN_SPEC = SyntheticSpec(num_ids=240, num_cameras=32, images_per_camera=1, seed=1000)
"""The tiny CLIP's pretraining set: 7,680 images of identities the re-id sets never use
(their seeds differ), each camera with its own look. Many cameras matter most: at equal
image counts 24-32 camera styles generalise far better than 8 or 12 to cameras never met
here."""


def _refuse(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"data.synthetic.{name}={value!r} is not allowed; expected {allowed}")
