"""The data section: which dataset, where its images and view masks come from.

Re-exported by ``viewcoop_core.config``; no torch import, like the other sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from viewcoop_core.config_tree import _require, _require_choice, _require_text
from viewcoop_core.synthetic.spec import SyntheticSpec
from viewcoop_core.vocabulary import DATASET_NAMES


@dataclass
class DataConfig:
    """Where the images and their view masks come from.

    ``masks_dir``: a folder of view masks, ``<image stem>.png`` (0 background, 1 front,
    2 back, 3 top, 4 side); for the synthetic set it replaces the generator's ``masks/``.
    ``view_parser``: a view-parser checkpoint (``viewcoop parse-views train``): the images
    without a mask in ``masks_dir`` (all of them without ``masks_dir``) get predicted
    masks, made once and cached in ``view_masks_cache`` (default: ``view-masks/`` next to
    ``root``) in a folder keyed by the checkpoint and the image set.
    ``view_parser_device``: "auto" (the GPU when there is one), "cpu" or "cuda".
    ``view_parser_flip``: average each image's parser logits with its mirror image's (a
    second forward pass; ``viewparse/inference.py``).

    ``skip_list``: a text file naming training images to leave out, one path per line
    (the pre-flight writes one into the run folder for the unreadable images it found).
    ``max_skipped_fraction``: the share of training images the pre-flight may skip as
    unreadable; above it the run stops and names them (0: any unreadable image stops it).
    """

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    masks_dir: str | None = None
    vehicleid_test_size: int = 2400
    num_workers: int = 2
    skip_list: str | None = None
    max_skipped_fraction: float = 0.01
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    view_parser: str | None = None
    view_masks_cache: str | None = None
    view_parser_batch_size: int = 64
    view_parser_device: str = "auto"
    view_parser_flip: bool = True

    def __post_init__(self) -> None:
        _require(
            self.view_parser_batch_size >= 1,
            "data.view_parser_batch_size",
            self.view_parser_batch_size,
            "an int >= 1",
        )
        _require(
            self.view_parser_device in ("auto", "cpu", "cuda")
            or self.view_parser_device.startswith("cuda:"),
            "data.view_parser_device",
            self.view_parser_device,
            "'auto', 'cpu', 'cuda' or 'cuda:<index>'",
        )
        _require_choice(self.dataset, DATASET_NAMES, "data.dataset")
        _require_text(self.root, "data.root")
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "an int >= 0")
        _require(
            0 <= self.max_skipped_fraction < 1,
            "data.max_skipped_fraction",
            self.max_skipped_fraction,
            "a fraction in [0, 1)",
        )
        _require(
            self.vehicleid_test_size in (800, 1600, 2400),
            "data.vehicleid_test_size",
            self.vehicleid_test_size,
            "one of (800, 1600, 2400)",
        )
