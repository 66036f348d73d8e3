"""The synthetic vehicle world: procedurally drawn multi-view vehicles with exact view
masks in the VeRi-776 layout, and the captioned pretraining of the tiny CLIP on it.

``spec.py`` (what a set is), ``identities.py``, ``vehicles.py``, ``cameras.py``,
``render.py`` (how an image is drawn), ``writer.py`` (the set on disk),
``captions.py`` / ``pretrain.py`` / ``probe.py`` (the tiny CLIP's pretraining).
"""

from viewcoop_core.synthetic.spec import SyntheticSpec
from viewcoop_core.synthetic.writer import (
    MASK_DIR,
    META_FILE,
    SPLIT_DIRS,
    SyntheticSummary,
    ensure_synthetic,
    make_synthetic,
)

__all__ = [
    "MASK_DIR",
    "META_FILE",
    "SPLIT_DIRS",
    "SyntheticSpec",
    "SyntheticSummary",
    "ensure_synthetic",
    "make_synthetic",
]
