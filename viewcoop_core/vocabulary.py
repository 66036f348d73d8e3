"""The project's names, defined once: views, mask labels, prompt variants, backends.

Every module that needs one of these imports it from here, and the config validates
against these registries, so a name can never mean two things in two places.

Two orders of the views exist and both matter:

* ``MASK_LABELS``: the pixel values of a view mask (PVEN's convention, and the
  synthetic generator's): 0 background, 1 front, 2 back, 3 top, 4 side.
* ``VIEW_NAMES``: the order in which the ViewCoOp prompt names the views (front,
  back, side, top); every view-ratio array, ``view_percent[:, j]``, ``clause_order``
  entry and ``view_bias[j]`` is indexed in this order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- views

MASK_LABELS: dict[int, str] = {0: "background", 1: "front", 2: "back", 3: "top", 4: "side"}
"""Pixel value -> class name of a view mask."""

BACKGROUND, FRONT, BACK, TOP, SIDE = (0, 1, 2, 3, 4)
NUM_MASK_LABELS = len(MASK_LABELS)
MASK_VALUE: dict[str, int] = {name: value for value, name in MASK_LABELS.items()}
"""Class name -> pixel value of a view mask."""
MASK_LEGEND = ", ".join(f"{value} {name}" for value, name in MASK_LABELS.items())

VIEW_NAMES: tuple[str, ...] = ("front", "back", "side", "top")
"""The order of the four views in the prompt and in every view-ratio array."""
NUM_VIEWS = len(VIEW_NAMES)
VIEW_MASK_VALUES: tuple[int, ...] = tuple(MASK_VALUE[name] for name in VIEW_NAMES)
"""Mask value of each view in ``VIEW_NAMES`` order: counts_by_value[VIEW_MASK_VALUES]."""

PATCH_SIZES: tuple[int, ...] = (8, 16, 32)
"""Patch sides of the paper's Table 4; ``"pixel"`` (or None) counts pixels instead."""
PATCH_READINGS: tuple[str, ...] = ("pixels", "grid")
"""Table 4's "s x s patches": s-pixel patches, or an s x s grid (``ViewsConfig``)."""

# ---------------------------------------------------------------------------- datasets

DATASET_NAMES: tuple[str, ...] = ("synthetic", "veri776", "vehicleid")
"""The dataset layouts ``viewcoop_core.data.datasets`` reads."""

# ---------------------------------------------------------------------------- prompts

PROMPT_VARIANTS: tuple[str, ...] = ("coop", "cocoop", "uncoop", "viewcoop_static", "viewcoop")
"""The prompts of the paper's Table 2."""
VIEW_AWARE_VARIANTS: frozenset[str] = frozenset({"viewcoop_static", "viewcoop"})


def needs_view_ratios(variant: str) -> bool:
    """Whether prompt ``variant`` states the view proportions (so needs view masks)."""
    return variant in VIEW_AWARE_VARIANTS


# -------------------------------------------------------------------- graph (Eq. 3-4)

DIC_VALUES: tuple[int, ...] = (0, 1, 2)
"""The values of the mutual dictionary Dic (Eq. 3): in how many modalities two samples share a cluster."""

TAU_PRESETS: dict[str, frozenset[int]] = {
    "0": frozenset({0}),
    "1": frozenset({1}),
    "1or2": frozenset({1, 2}),
    "2": frozenset({2}),
}
DEFAULT_TAU = TAU_PRESETS["1or2"]

_TAU_FORMS = (
    "a preset name ('0', '1', '1or2', '2'), an int in {0, 1, 2}, a list/tuple/set of "
    "such ints (e.g. [1, 2]), or a string '1,2' / '1 or 2'"
)


def parse_tau(value: Any) -> frozenset[int]:
    """Turn a config value into the set of accepted Dic values (Eq. 4's tau).

    Accepts a preset name ("0", "1", "1or2", "2"), an int, an iterable of ints, or a
    string of ints joined by "," or "or" ("1,2", "1 or 2"). The result is a non-empty
    subset of {0, 1, 2}.

    Raises:
        TypeError: an element is not an int (bools and floats included).
        ValueError: empty, or a value outside {0, 1, 2}; the message lists the forms.
    """
    if isinstance(value, frozenset | set | list | tuple):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in TAU_PRESETS:
            return TAU_PRESETS[text]
        items = [part.strip() for part in text.replace("or", ",").split(",")]
    else:
        items = [value]
    if not items:
        raise ValueError(f"tau must not be empty; expected {_TAU_FORMS}")
    return frozenset(_parse_tau_item(item, value) for item in items)


def _parse_tau_item(item: Any, whole: Any) -> int:
    # bool is an int subclass: True would silently mean {1}.
    if isinstance(item, bool | np.bool_) or not isinstance(item, int | np.integer | str):
        raise TypeError(f"invalid tau {whole!r}: {item!r} is not an int; expected {_TAU_FORMS}")
    if isinstance(item, str):
        if not item.lstrip("-").isdigit():
            raise ValueError(f"invalid tau {whole!r}; expected {_TAU_FORMS}")
        item = int(item)
    if int(item) not in DIC_VALUES:
        raise ValueError(
            f"invalid tau {whole!r}: {item!r} is not a Dic value in {set(DIC_VALUES)}; "
            f"expected {_TAU_FORMS}"
        )
    return int(item)


def tau_name(tau: Any) -> str:
    """Stable name of a tau setting, e.g. {1, 2} -> "1or2" (matches the preset names)."""
    return "or".join(str(v) for v in sorted(parse_tau(tau)))


# ----------------------------------------------------------------------------- losses

LOSS_TERMS: tuple[str, ...] = ("v", "t", "g", "cm")
"""Eq. 9's terms: L_v (image pseudo-labels), L_t (Eq. 7), L_g (Eq. 6), L_cm (Eq. 8)."""
TEXT_TERMS: frozenset[str] = frozenset({"t", "cm"})

LOSS_PRESETS: dict[str, frozenset[str]] = {
    "baseline": frozenset({"v"}),
    "+viewcoop": frozenset({"v", "t", "cm"}),
    "+cmg": frozenset({"v", "g"}),
    "full": frozenset({"v", "t", "g", "cm"}),
}
"""Loss terms of the rows of the paper's Table 1 (module ablation).

* ``baseline``: "the image encoder directly ... without any ablation modules": L_v.
* ``+viewcoop``: adds the text prompt branch, which is trained by its own pseudo-label
  loss L_t and aligned to the image by L_cm; no graph.
* ``+cmg``: adds the cross-modal mutual graph, whose only loss is L_g. The graph still
  needs text pseudo-labels y^t, so the text features are extracted and clustered, but
  no text term trains them.
* ``full`` ("Ours"): everything, Eq. 9.

Caveat: the paper's "w/ CMG" numbers are identical to Table 2's "CoOp" row, which
suggests that run trained the whole framework (L_t and L_cm included) with a CoOp
prompt instead of ViewCoOp. That reading is ``full`` with ``prompt = coop``; the
``+cmg`` preset here is the literal term-wise ablation.
"""


def parse_losses(value: str | Iterable[str]) -> frozenset[str]:
    """The set of active loss terms from a preset name or a list of terms.

    Accepts a preset of :data:`LOSS_PRESETS`, one term, a comma-separated string
    ("v,t,cm") or an iterable of terms from :data:`LOSS_TERMS`.
    """
    if isinstance(value, str):
        if value in LOSS_PRESETS:
            return LOSS_PRESETS[value]
        terms = [part.strip() for part in value.split(",") if part.strip()]
    else:
        terms = list(value)
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown or not terms:
        detail = f" (unknown: {unknown})" if unknown else ""
        raise ValueError(
            f"loss terms {value!r}{detail}: expected a preset {sorted(LOSS_PRESETS)} "
            f"or a non-empty list of terms from {list(LOSS_TERMS)}"
        )
    return frozenset(terms)


CM_FORMS: tuple[str, ...] = ("eq8", "clip")
"""L_cm as Eq. 8 prints it, or as CLIP's symmetric InfoNCE."""
CM_POSITIVES: tuple[str, ...] = ("pair", "image_cluster")
TEXT_TARGETS: tuple[str, ...] = ("text_clusters", "image_clusters")
"""What L_t trains text features toward: text clusters (Eq. 7) or image clusters."""
GRAPH_SCOPES: tuple[str, ...] = ("batch", "all")
"""L_g's partners: the batch, or all N training images (an instance memory; Eq. 6)."""
GRAPH_WEIGHTINGS: tuple[str, ...] = ("pairs", "sets")
"""L_g's average: over pairs (Eq. 6 up to a constant), or positives and negatives apart."""
GRAPH_POSITIVES: tuple[str, ...] = ("mutual", "image", "none")
"""L_g's positive sets: the mutual graph's neighbours (Eq. 4-5, the paper), the image
pseudo-identity's mates alone (no text in the graph), or none (L_g only repels)."""


def needs_text(terms: Iterable[str]) -> bool:
    """Whether loss ``terms`` train the text side (L_t or L_cm active)."""
    return bool(TEXT_TERMS & set(terms))


# --------------------------------------------------------------------------- backends

DBSCAN_BACKENDS: tuple[str, ...] = ("sklearn", "torch", "cuml")
"""Concrete DBSCAN implementations; config and callers also accept ``"auto"``."""
DICTIONARY_BACKENDS: tuple[str, ...] = ("numpy", "torch", "cupy")
"""Concrete mutual-dictionary (Eq. 3) implementations; ``"auto"`` is accepted too."""
AUTO = "auto"
CAMERA_NORMS: tuple[str, ...] = ("none", "mean", "standardize")
"""Per-camera feature normalisation before clustering (``clustering/camera.py``)."""
JACCARD_NEIGHBOURHOODS: tuple[str, ...] = ("k1+1", "k1")
"""k1 + 1 nearest incl. the point itself (the re-ranking paper's code), or k1 (Cluster
Contrast's faiss path)."""
DBSCAN_BACKEND_CHOICES: tuple[str, ...] = (AUTO, *DBSCAN_BACKENDS)
DICTIONARY_BACKEND_CHOICES: tuple[str, ...] = (AUTO, *DICTIONARY_BACKENDS)


# --------------------------------------------------------------------------- weights

TINY_MODEL_NAME = "viewcoop-tiny"
"""The small CLIP registered with open_clip for tests, the CPU demo and the benchmark."""
SMALL_MODEL_NAME = "viewcoop-small"
"""The tiny CLIP with every width doubled (joint space, vision and text towers)."""
PROJECT_MODEL_NAMES: tuple[str, ...] = (TINY_MODEL_NAME, SMALL_MODEL_NAME)
"""The architectures the project registers with open_clip (``models/clip.py``)."""
SHIPPED_WEIGHTS: dict[str, dict[str, str]] = {
    "synthetic": {
        TINY_MODEL_NAME: "viewcoop-tiny-synthetic.safetensors",
        SMALL_MODEL_NAME: "viewcoop-small-synthetic.safetensors",
    },
}
"""``model.pretrained`` tags for weights shipped in ``viewcoop_core/models/weights/``:
tag -> {architecture: file name}."""
