"""Procedural multi-view vehicle images in the VeRi-776 layout, with exact view masks.

Each identity is a handful of convex blocks (body, cabin, cab, cargo box, roof items)
whose faces carry a view label (front / back / top / side). An image is one pinhole
view of that vehicle, drawn with the painter's algorithm: back-face culling inside a
block, separating planes between blocks (``draw_order``), every polygon filled at pixel
centres. The same polygons are filled into a single-channel mask with their face's
label, so the mask is exact by construction; camera blur and resolution loss are
applied to the image only, afterwards. Decals (windows, lights, stripes, stickers,
wheels) are polygons in a face's own (u, v) coordinates and carry that face's label.

Identity = body type (sedan / suv / truck / bus / van, each with its own block
layout and per-identity proportions), body colour and marks (stripes, roof item,
sticker, wheel style). Some identities are near-duplicates on purpose: same type,
shape and nearly the same colour as another identity, differing by one mark.

Cameras differ in their mixture of viewpoints (camera 0 mostly front, 1 back, 2 side,
3 high top-oblique, 4 front-oblique, 5 back-oblique; further cameras repeat the six
view templates with their own look), lighting, colour cast, background, blur and
resolution. Every random draw for one image comes from a generator seeded with
``(seed, vid, camera, k)``, so the bytes written do not depend on generation order.

Output (``make_synthetic``)::

    out_dir/
    |-- image_train/  VVVV_cCCC_FFFFFFFF_0.jpg   (ids 1..T)
    |-- image_query/  copies of chosen gallery images, same names
    |-- image_test/   the gallery (ids T+1..N)
    |-- masks/        <stem>.png, uint8 0 background, 1 front, 2 back, 3 top, 4 side
    `-- meta.json     generation parameters, camera styles, per-id attributes, per-image poses
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

logger = logging.getLogger(__name__)

BACKGROUND, FRONT, BACK, TOP, SIDE = 0, 1, 2, 3, 4
VIEW_NAMES = ("background", "front", "back", "top", "side")
BODY_TYPES = ("sedan", "suv", "truck", "bus", "van")
SPLIT_DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
MASK_DIR = "masks"
META_FILE = "meta.json"
JPEG_QUALITY = 92

# Independent random streams per purpose: the first entry after the seed.
_TAG_IDENTITY, _TAG_PAIRING, _TAG_CAMERA, _TAG_IMAGE, _TAG_QUERY, _TAG_FRAME = range(1, 7)

_FACE_LABELS = {"front": FRONT, "back": BACK, "top": TOP, "left": SIDE, "right": SIDE}

BODY_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (232, 232, 228),
    "black": (30, 30, 34),
    "silver": (176, 180, 186),
    "grey": (105, 108, 114),
    "red": (172, 30, 34),
    "maroon": (106, 24, 30),
    "blue": (34, 74, 166),
    "navy": (28, 38, 84),
    "green": (38, 114, 64),
    "yellow": (224, 190, 46),
    "orange": (224, 114, 36),
    "brown": (112, 76, 46),
    "beige": (204, 188, 150),
    "sky": (112, 162, 212),
}
MARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 22),
    "red": (210, 30, 30),
    "yellow": (246, 210, 30),
    "blue": (30, 80, 220),
    "green": (40, 180, 70),
    "orange": (246, 130, 20),
}
ROOF_COLOURS: dict[str, dict[str, tuple[int, int, int]]] = {
    "rack": {"black": (24, 24, 26), "silver": (190, 192, 196)},
    "light_bar": {"amber": (250, 170, 20), "red_blue": (0, 0, 0)},
    "roof_box": {"black": (26, 26, 30), "white": (236, 236, 236), "grey": (120, 122, 126)},
}
HUB_COLOURS: dict[str, tuple[int, int, int]] = {
    "silver": (200, 202, 206),
    "black": (34, 34, 36),
    "gold": (206, 166, 60),
    "white": (244, 244, 244),
}
CARGO_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 234),
    "silver": (180, 184, 188),
    "blue": (40, 80, 160),
    "red": (170, 40, 40),
}
STRIPES = (None, "single", "double")
ROOF_ITEMS = (None, "rack", "light_bar", "roof_box")
STICKERS = (None, "windshield_left", "windshield_right", "rear")
WHEEL_STYLES = ("disc", "spoke", "dark")
_PAINTS: dict[str, tuple[int, int, int]] = {
    "glass": (38, 48, 64),
    "headlight": (238, 238, 216),
    "taillight": (198, 28, 32),
    "grille": (40, 40, 44),
    "plate": (228, 228, 222),
    "trim": (52, 52, 56),
    "tyre": (26, 26, 28),
    "seam": (60, 60, 64),
}
_LIGHT_BAR_RED, _LIGHT_BAR_BLUE = (220, 30, 30), (30, 60, 230)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, *keys)``, never on call order."""
    return np.random.default_rng([seed, *keys])


# ----------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class VehicleAttributes:
    """Everything that makes one identity: shape, paint and marks.

    ``scale`` multiplies the type's length, width and height; ``colour`` is the
    jittered body RGB. ``near_duplicate_of`` names the identity this one was copied
    from (same type, scale and near colour, one mark changed).
    """

    vid: int
    body_type: str
    scale: tuple[float, float, float]
    colour_name: str
    colour: tuple[int, int, int]
    cargo_colour: str
    stripe: str | None
    stripe_colour: str
    roof_item: str | None
    roof_colour: str
    sticker: str | None
    sticker_colour: str
    wheel_style: str
    hub_colour: str
    near_duplicate_of: int | None = None


def _pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def _jitter_colour(
    rng: np.random.Generator, rgb: tuple[int, int, int], amount: int
) -> tuple[int, int, int]:
    noisy = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(c) for c in noisy)


def sample_attributes(vid: int, seed: int) -> VehicleAttributes:
    """Draw a fresh identity from the stream ``(seed, identity, vid)``."""
    rng = _rng(seed, _TAG_IDENTITY, vid)
    colour_name = _pick(rng, list(BODY_COLOURS))
    roof_item = _pick(rng, ROOF_ITEMS, p=[0.4, 0.2, 0.2, 0.2])
    return VehicleAttributes(
        vid=vid,
        body_type=_pick(rng, BODY_TYPES),
        scale=tuple(round(float(s), 3) for s in rng.uniform(0.94, 1.06, size=3)),
        colour_name=colour_name,
        colour=_jitter_colour(rng, BODY_COLOURS[colour_name], 14),
        cargo_colour=_pick(rng, list(CARGO_COLOURS)),
        stripe=_pick(rng, STRIPES, p=[0.5, 0.3, 0.2]),
        stripe_colour=_pick(rng, list(MARK_COLOURS)),
        roof_item=roof_item,
        roof_colour=_pick(rng, list(ROOF_COLOURS[roof_item or "rack"])),
        sticker=_pick(rng, STICKERS, p=[0.4, 0.2, 0.2, 0.2]),
        sticker_colour=_pick(rng, list(MARK_COLOURS)),
        wheel_style=_pick(rng, WHEEL_STYLES),
        hub_colour=_pick(rng, list(HUB_COLOURS)),
    )


def _change_one_mark(rng: np.random.Generator, base: VehicleAttributes) -> dict:
    """Field updates that change exactly one visible mark of ``base``."""
    mark = _pick(rng, ("stripe", "roof_item", "sticker", "hub_colour"))
    if mark == "hub_colour":
        return {"hub_colour": _pick(rng, [h for h in HUB_COLOURS if h != base.hub_colour])}
    options = {"stripe": STRIPES, "roof_item": ROOF_ITEMS, "sticker": STICKERS}[mark]
    new_value = _pick(rng, [o for o in options if o != getattr(base, mark)])
    update = {mark: new_value}
    if mark == "roof_item":
        update["roof_colour"] = _pick(rng, list(ROOF_COLOURS[new_value or "rack"]))
    return update


def make_near_duplicate(base: VehicleAttributes, vid: int, seed: int) -> VehicleAttributes:
    """Identity ``vid``: a copy of ``base`` with a colour within +-6 per channel and one mark changed."""
    rng = _rng(seed, _TAG_IDENTITY, vid)
    colour = _jitter_colour(rng, base.colour, 6)
    return replace(
        base, vid=vid, colour=colour, near_duplicate_of=base.vid, **_change_one_mark(rng, base)
    )


def _near_duplicate_pairs(first: int, last: int, seed: int, fraction: float) -> set[int]:
    """Second members of the pairs ``(v, v + 1)`` in ``first..last`` that become near-duplicates.

    At least one pair per split when the split has two ids and ``fraction > 0``, so both
    train and test always contain the hard case.
    """
    starts = list(range(first, last, 2))
    if not starts or fraction <= 0:
        return set()
    count = min(len(starts), max(1, round(fraction * len(starts))))
    chosen = _rng(seed, _TAG_PAIRING, first).choice(len(starts), size=count, replace=False)
    return {starts[int(i)] + 1 for i in chosen}


def assign_identities(
    num_ids: int, num_train_ids: int, seed: int, near_duplicate_fraction: float
) -> list[VehicleAttributes]:
    """Attributes of ids ``1..num_ids``; pairs never straddle the train/test boundary."""
    seconds = _near_duplicate_pairs(1, num_train_ids, seed, near_duplicate_fraction)
    seconds |= _near_duplicate_pairs(num_train_ids + 1, num_ids, seed, near_duplicate_fraction)
    identities: list[VehicleAttributes] = []
    for vid in range(1, num_ids + 1):
        if vid in seconds:
            identities.append(make_near_duplicate(identities[-1], vid, seed))
        else:
            identities.append(sample_attributes(vid, seed))
    return identities


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Block:
    """A convex hexahedron: a horizontal rectangle at ``z[0]`` below one at ``z[1]``.

    Metres; x runs back -> front, y right -> left (the vehicle's own left), z up.
    ``x_bottom``/``x_top`` are (back, front) extents, ``half_width`` (bottom, top).
    Blocks of one vehicle may touch but their bounding boxes never overlap, which is
    what ``draw_order`` relies on. ``paint`` is a role resolved per identity ("body",
    "cargo", "trim") or an explicit RGB. ``y_centre`` shifts the block sideways.
    """

    name: str
    x_bottom: tuple[float, float]
    x_top: tuple[float, float]
    half_width: tuple[float, float]
    z: tuple[float, float]
    paint: str | tuple[int, int, int] = "body"
    y_centre: float = 0.0


@dataclass(frozen=True)
class DecalSpec:
    """A paint box ``(u0, u1, v0, v1)`` on ``face`` of ``block``; face "sides" = left and right."""

    block: str
    face: str
    box: tuple[float, float, float, float]
    paint: str


@dataclass(frozen=True)
class BodyPlan:
    """The unscaled layout of one body type and where its decals and marks go."""

    blocks: tuple[Block, ...]
    decals: tuple[DecalSpec, ...]
    wheel_block: str
    wheels_x: tuple[float, ...]
    wheel_radius: float
    roof_block: str
    stripe: tuple[str, float, float]
    windshield: tuple[str, tuple[float, float, float, float]]
    rear_sticker: tuple[str, tuple[float, float, float, float]]


def _car_lights(
    block: str, v_front: tuple[float, float], v_rear: tuple[float, float]
) -> tuple[DecalSpec, ...]:
    return (
        DecalSpec(block, "front", (0.05, 0.24, *v_front), "headlight"),
        DecalSpec(block, "front", (0.76, 0.95, *v_front), "headlight"),
        DecalSpec(block, "front", (0.33, 0.67, v_front[0] - 0.1, v_front[1] - 0.05), "grille"),
        DecalSpec(block, "front", (0.40, 0.60, 0.08, 0.28), "plate"),
        DecalSpec(block, "back", (0.05, 0.24, *v_rear), "taillight"),
        DecalSpec(block, "back", (0.76, 0.95, *v_rear), "taillight"),
        DecalSpec(block, "back", (0.40, 0.60, 0.22, 0.44), "plate"),
    )


def _cabin_glass(block: str, side_box: tuple[float, float, float, float]) -> tuple[DecalSpec, ...]:
    return (
        DecalSpec(block, "front", (0.07, 0.93, 0.08, 0.90), "glass"),
        DecalSpec(block, "back", (0.09, 0.91, 0.12, 0.88), "glass"),
        DecalSpec(block, "sides", side_box, "glass"),
    )


_PLANS: dict[str, BodyPlan] = {
    "sedan": BodyPlan(
        blocks=(
            Block("body", (-2.3, 2.3), (-2.3, 2.3), (0.9, 0.9), (0.30, 0.95)),
            Block("cabin", (-1.3, 0.95), (-0.85, 0.25), (0.85, 0.72), (0.95, 1.45)),
        ),
        decals=_cabin_glass("cabin", (0.07, 0.93, 0.12, 0.86))
        + _car_lights("body", (0.55, 0.85), (0.58, 0.86)),
        wheel_block="body",
        wheels_x=(-1.4, 1.45),
        wheel_radius=0.32,
        roof_block="cabin",
        stripe=("body", 0.40, 0.58),
        windshield=("cabin", (0.07, 0.93, 0.08, 0.90)),
        rear_sticker=("cabin", (0.09, 0.91, 0.12, 0.88)),
    ),
    "suv": BodyPlan(
        blocks=(
            Block("body", (-2.35, 2.35), (-2.35, 2.35), (0.95, 0.95), (0.38, 1.10)),
            Block("cabin", (-2.2, 0.75), (-2.05, 0.1), (0.9, 0.8), (1.10, 1.82)),
        ),
        decals=_cabin_glass("cabin", (0.05, 0.95, 0.14, 0.86))
        + _car_lights("body", (0.55, 0.85), (0.60, 0.88)),
        wheel_block="body",
        wheels_x=(-1.5, 1.5),
        wheel_radius=0.38,
        roof_block="cabin",
        stripe=("body", 0.45, 0.62),
        windshield=("cabin", (0.07, 0.93, 0.08, 0.90)),
        rear_sticker=("cabin", (0.09, 0.91, 0.12, 0.88)),
    ),
    "van": BodyPlan(
        blocks=(
            Block("body", (-2.5, 2.5), (-2.5, 2.5), (0.98, 0.98), (0.32, 1.05)),
            Block("cabin", (-2.5, 1.6), (-2.5, 0.95), (0.98, 0.93), (1.05, 2.10)),
        ),
        decals=(
            DecalSpec("cabin", "front", (0.07, 0.93, 0.10, 0.90), "glass"),
            DecalSpec("cabin", "back", (0.12, 0.88, 0.45, 0.88), "glass"),
            DecalSpec("cabin", "sides", (0.72, 0.95, 0.35, 0.86), "glass"),
            DecalSpec("body", "sides", (0.42, 0.43, 0.05, 0.98), "seam"),
        )
        + _car_lights("body", (0.55, 0.85), (0.55, 0.88)),
        wheel_block="body",
        wheels_x=(-1.7, 1.75),
        wheel_radius=0.34,
        roof_block="cabin",
        stripe=("cabin", 0.10, 0.26),
        windshield=("cabin", (0.07, 0.93, 0.10, 0.90)),
        rear_sticker=("cabin", (0.12, 0.88, 0.45, 0.88)),
    ),
    "truck": BodyPlan(
        blocks=(
            Block("chassis", (-3.5, 3.5), (-3.5, 3.5), (1.1, 1.1), (0.50, 0.95), "trim"),
            Block("cab", (1.5, 3.5), (1.5, 3.3), (1.1, 1.05), (0.95, 2.60)),
            Block("cargo", (-3.5, 1.35), (-3.5, 1.35), (1.17, 1.17), (0.95, 3.30), "cargo"),
        ),
        decals=(
            DecalSpec("cab", "front", (0.07, 0.93, 0.50, 0.92), "glass"),
            DecalSpec("cab", "sides", (0.50, 0.92, 0.50, 0.88), "glass"),
            DecalSpec("cab", "front", (0.05, 0.22, 0.06, 0.20), "headlight"),
            DecalSpec("cab", "front", (0.78, 0.95, 0.06, 0.20), "headlight"),
            DecalSpec("cab", "front", (0.30, 0.70, 0.06, 0.36), "grille"),
            DecalSpec("chassis", "front", (0.40, 0.60, 0.15, 0.80), "plate"),
            DecalSpec("cargo", "back", (0.495, 0.505, 0.03, 0.97), "seam"),
            DecalSpec("chassis", "back", (0.04, 0.20, 0.20, 0.80), "taillight"),
            DecalSpec("chassis", "back", (0.80, 0.96, 0.20, 0.80), "taillight"),
            DecalSpec("chassis", "back", (0.40, 0.60, 0.15, 0.80), "plate"),
        ),
        wheel_block="chassis",
        wheels_x=(-2.7, -1.6, 2.6),
        wheel_radius=0.5,
        roof_block="cab",
        stripe=("cargo", 0.30, 0.45),
        windshield=("cab", (0.07, 0.93, 0.50, 0.92)),
        rear_sticker=("cargo", (0.55, 0.95, 0.10, 0.60)),
    ),
    "bus": BodyPlan(
        blocks=(Block("body", (-5.5, 5.5), (-5.5, 5.5), (1.25, 1.25), (0.35, 3.10)),),
        decals=(
            DecalSpec("body", "front", (0.05, 0.95, 0.45, 0.92), "glass"),
            DecalSpec("body", "back", (0.10, 0.90, 0.60, 0.90), "glass"),
            DecalSpec("body", "sides", (0.04, 0.86, 0.55, 0.88), "glass"),
            DecalSpec("body", "right", (0.88, 0.96, 0.04, 0.90), "glass"),
            DecalSpec("body", "front", (0.05, 0.20, 0.06, 0.15), "headlight"),
            DecalSpec("body", "front", (0.80, 0.95, 0.06, 0.15), "headlight"),
            DecalSpec("body", "front", (0.40, 0.60, 0.04, 0.12), "plate"),
            DecalSpec("body", "back", (0.05, 0.18, 0.10, 0.30), "taillight"),
            DecalSpec("body", "back", (0.82, 0.95, 0.10, 0.30), "taillight"),
            DecalSpec("body", "back", (0.40, 0.60, 0.06, 0.14), "plate"),
        ),
        wheel_block="body",
        wheels_x=(-3.0, 3.6),
        wheel_radius=0.5,
        roof_block="body",
        stripe=("body", 0.30, 0.42),
        windshield=("body", (0.05, 0.95, 0.45, 0.92)),
        rear_sticker=("body", (0.10, 0.90, 0.60, 0.90)),
    ),
}


@dataclass(frozen=True, eq=False)
class Decal:
    """A filled polygon in its face's (u, v) coordinates: ``uv`` float64 (K, 2)."""

    uv: np.ndarray
    colour: tuple[int, int, int]


@dataclass(eq=False)
class Face:
    """One planar quad of a block.

    ``corners`` float64 (4, 3) in the order p00, p10, p11, p01 of its (u, v) frame.
    Side faces: u runs back -> front, v bottom -> top. Front / back faces: u runs from
    the vehicle's right to its left, v bottom -> top. Top face: u back -> front, v
    right -> left. ``normal`` float64 (3,) points outwards.
    """

    name: str
    label: int
    corners: np.ndarray
    normal: np.ndarray
    colour: tuple[int, int, int]
    decals: list[Decal]

    def point(self, uv: np.ndarray) -> np.ndarray:
        """Bilinear map of (K, 2) face coordinates to (K, 3) world points (extrapolates outside [0, 1])."""
        u, v = uv[:, :1], uv[:, 1:2]
        p00, p10, p11, p01 = self.corners
        return (1 - u) * (1 - v) * p00 + u * (1 - v) * p10 + u * v * p11 + (1 - u) * v * p01


@dataclass(eq=False)
class Part:
    """A convex block turned into labelled faces; ``lo`` / ``hi`` its (3,) bounding box."""

    name: str
    faces: dict[str, Face]
    lo: np.ndarray
    hi: np.ndarray


def _block_corners(block: Block) -> dict[str, np.ndarray]:
    """Face name -> (4, 3) corners p00, p10, p11, p01 of the block's five drawable faces."""
    (xb0, xb1), (xt0, xt1) = block.x_bottom, block.x_top
    (wb, wt), (z0, z1) = block.half_width, block.z
    yc = block.y_centre

    def b(front: bool, left: bool) -> list[float]:
        return [xb1 if front else xb0, yc + (wb if left else -wb), z0]

    def t(front: bool, left: bool) -> list[float]:
        return [xt1 if front else xt0, yc + (wt if left else -wt), z1]

    quads = {
        "front": [b(True, False), b(True, True), t(True, True), t(True, False)],
        "back": [b(False, False), b(False, True), t(False, True), t(False, False)],
        "left": [b(False, True), b(True, True), t(True, True), t(False, True)],
        "right": [b(False, False), b(True, False), t(True, False), t(False, False)],
        "top": [t(False, False), t(True, False), t(True, True), t(False, True)],
    }
    return {name: np.asarray(q, dtype=np.float64) for name, q in quads.items()}


def _outward_normal(corners: np.ndarray, interior: np.ndarray) -> np.ndarray:
    normal = np.cross(corners[2] - corners[0], corners[3] - corners[1])
    normal /= np.linalg.norm(normal)
    return -normal if normal @ (corners.mean(axis=0) - interior) < 0 else normal


def block_to_part(block: Block, colour: tuple[int, int, int]) -> Part:
    """Labelled faces (no bottom: the camera never sees under a vehicle) of one block."""
    corners = _block_corners(block)
    all_points = np.concatenate(list(corners.values()))
    interior = all_points.mean(axis=0)
    faces = {
        name: Face(name, _FACE_LABELS[name], quad, _outward_normal(quad, interior), colour, [])
        for name, quad in corners.items()
    }
    return Part(block.name, faces, all_points.min(axis=0), all_points.max(axis=0))


def _box_uv(box: tuple[float, float, float, float]) -> np.ndarray:
    u0, u1, v0, v1 = box
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=np.float64)


def _scaled_plan(plan: BodyPlan, scale: tuple[float, float, float]) -> BodyPlan:
    sx, sy, sz = scale

    def scale_block(b: Block) -> Block:
        return replace(
            b,
            x_bottom=(b.x_bottom[0] * sx, b.x_bottom[1] * sx),
            x_top=(b.x_top[0] * sx, b.x_top[1] * sx),
            half_width=(b.half_width[0] * sy, b.half_width[1] * sy),
            z=(b.z[0] * sz, b.z[1] * sz),
        )

    return replace(
        plan,
        blocks=tuple(scale_block(b) for b in plan.blocks),
        wheels_x=tuple(x * sx for x in plan.wheels_x),
        wheel_radius=plan.wheel_radius * min(sx, sz),
    )


def _faces_named(part: Part, face: str) -> list[Face]:
    return [part.faces["left"], part.faces["right"]] if face == "sides" else [part.faces[face]]


def _add_box_decal(parts: dict[str, Part], spec: DecalSpec, colour: tuple[int, int, int]) -> None:
    for face in _faces_named(parts[spec.block], spec.face):
        face.decals.append(Decal(_box_uv(spec.box), colour))


def _stripe_boxes(kind: str, v0: float, v1: float) -> list[tuple[float, float, float, float]]:
    if kind == "single":
        return [(0.02, 0.98, v0, v1)]
    gap = 0.3 * (v1 - v0)
    return [(0.02, 0.98, v0, v0 + gap), (0.02, 0.98, v1 - gap, v1)]


def _sticker_box(anchor: tuple[float, float, float, float], corner: str, size: tuple[float, float]):
    """A sticker in the lower ``corner`` ("low_u" / "high_u") of a window box."""
    u0, u1, v0, v1 = anchor
    du, dv = (u1 - u0) * size[0], (v1 - v0) * size[1]
    left = u1 - 0.06 * (u1 - u0) - du if corner == "high_u" else u0 + 0.06 * (u1 - u0)
    bottom = v0 + 0.08 * (v1 - v0)
    return (left, left + du, bottom, bottom + dv)


def _add_sticker(parts: dict[str, Part], plan: BodyPlan, attrs: VehicleAttributes) -> None:
    colour = MARK_COLOURS[attrs.sticker_colour]
    if attrs.sticker == "rear":
        block, anchor = plan.rear_sticker
        box = _sticker_box(anchor, "low_u", (0.3, 0.35))
        parts[block].faces["back"].decals.append(Decal(_box_uv(box), colour))
        return
    block, anchor = plan.windshield
    # The front face's u runs from the vehicle's right (-y) to its left (+y).
    corner = "high_u" if attrs.sticker == "windshield_left" else "low_u"
    box = _sticker_box(anchor, corner, (0.18, 0.25))
    parts[block].faces["front"].decals.append(Decal(_box_uv(box), colour))


def _circle_uv(
    face: Face, centre_xz: tuple[float, float], radius: float, n: int = 20
) -> np.ndarray:
    """(n, 2) face coordinates of a circle in the plane of a side face (x along u, z along v)."""
    p00, p10, _, p01 = face.corners
    length_u, height_v = p10[0] - p00[0], p01[2] - p00[2]
    angle = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    x = centre_xz[0] + radius * np.cos(angle)
    z = centre_xz[1] + radius * np.sin(angle)
    return np.stack([(x - p00[0]) / length_u, (z - p00[2]) / height_v], axis=1)


def _spoke_uv(
    face: Face, centre_xz: tuple[float, float], radius: float, angle: float
) -> np.ndarray:
    p00, p10, _, p01 = face.corners
    length_u, height_v = p10[0] - p00[0], p01[2] - p00[2]
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]]) * 0.08 * radius
    inner, outer = 0.2 * radius * along, radius * along
    xz = np.array(centre_xz) + np.stack(
        [inner - across, outer - across, outer + across, inner + across]
    )
    return np.stack([(xz[:, 0] - p00[0]) / length_u, (xz[:, 1] - p00[2]) / height_v], axis=1)


def _wheel_decals(
    face: Face, x: float, radius: float, style: str, hub: tuple[int, int, int]
) -> list[Decal]:
    """Tyre, hub and (style "spoke") spokes of one wheel touching the ground at ``x``."""
    centre = (x, radius)
    decals = [Decal(_circle_uv(face, centre, radius), _PAINTS["tyre"])]
    if style == "dark":
        decals.append(Decal(_circle_uv(face, centre, 0.58 * radius), (48, 48, 52)))
        decals.append(Decal(_circle_uv(face, centre, 0.2 * radius, 10), hub))
        return decals
    decals.append(Decal(_circle_uv(face, centre, 0.6 * radius), hub))
    if style == "spoke":
        decals += [
            Decal(_spoke_uv(face, centre, 0.6 * radius, a), _PAINTS["tyre"])
            for a in np.linspace(0.0, 2 * math.pi, 5, endpoint=False) + math.pi / 2
        ]
    return decals


def _box(name: str, x: tuple[float, float], half_width: float, z, paint, y: float = 0.0):
    """An upright cuboid block (same rectangle at bottom and top)."""
    return Block(name, x, x, (half_width, half_width), z, paint, y_centre=y)


def _roof_item_blocks(item: str, colour_name: str, roof: Block) -> list[Block]:
    """Blocks of a roof item standing on the top face of ``roof``."""
    (x0, x1), half, z = roof.x_top, roof.half_width[1], roof.z[1]
    length = x1 - x0
    if item == "roof_box":
        mid, height = (x0 + x1) / 2, min(0.35, 0.3 * (roof.z[1] - roof.z[0]) + 0.1)
        span = (mid - 0.3 * length, mid + 0.3 * length)
        return [
            _box(
                "roof_box",
                span,
                0.6 * half,
                (z, z + height),
                ROOF_COLOURS[item][colour_name],
            )
        ]
    if item == "light_bar":
        span, height = (x1 - 0.12 * length - 0.25, x1 - 0.12 * length), (z, z + 0.12)
        if colour_name == "amber":
            return [_box("light_bar", span, 0.8 * half, height, ROOF_COLOURS[item]["amber"])]
        # Two halves, separated along y so ``draw_order`` can sort them.
        return [
            _box("light_bar_r", span, 0.4 * half, height, _LIGHT_BAR_RED, y=-0.4 * half),
            _box("light_bar_l", span, 0.4 * half, height, _LIGHT_BAR_BLUE, y=0.4 * half),
        ]
    rgb = ROOF_COLOURS["rack"][colour_name]
    rail_span = (x0 + 0.1 * length, x1 - 0.1 * length)
    rails = [
        _box(f"rail_{i}", rail_span, 0.04, (z, z + 0.07), rgb, y=y)
        for i, y in enumerate((-0.75 * half, 0.75 * half))
    ]
    bar_centres = [rail_span[0] + f * (rail_span[1] - rail_span[0]) for f in (0.3, 0.7)]
    bars = [
        _box(f"bar_{i}", (xc - 0.04, xc + 0.04), 0.85 * half, (z + 0.07, z + 0.12), rgb)
        for i, xc in enumerate(bar_centres)
    ]
    return rails + bars


def _paint(block: Block, attrs: VehicleAttributes) -> tuple[int, int, int]:
    if isinstance(block.paint, tuple):
        return block.paint
    return {
        "body": attrs.colour,
        "cargo": CARGO_COLOURS[attrs.cargo_colour],
        "trim": _PAINTS["trim"],
    }[block.paint]


def build_vehicle(attrs: VehicleAttributes) -> list[Part]:
    """The parts of one identity, with all decals attached to their faces."""
    plan = _scaled_plan(_PLANS[attrs.body_type], attrs.scale)
    blocks = list(plan.blocks)
    if attrs.roof_item is not None:
        roof = next(b for b in plan.blocks if b.name == plan.roof_block)
        blocks += _roof_item_blocks(attrs.roof_item, attrs.roof_colour, roof)
    parts = {}
    for block in blocks:
        part = block_to_part(block, _paint(block, attrs))
        parts[part.name] = part
    for spec in plan.decals:
        _add_box_decal(parts, spec, _PAINTS[spec.paint])
    if attrs.stripe is not None:
        block, v0, v1 = plan.stripe
        for box in _stripe_boxes(attrs.stripe, v0, v1):
            _add_box_decal(
                parts, DecalSpec(block, "sides", box, "trim"), MARK_COLOURS[attrs.stripe_colour]
            )
    for face in _faces_named(parts[plan.wheel_block], "sides"):
        for x in plan.wheels_x:
            face.decals += _wheel_decals(
                face, x, plan.wheel_radius, attrs.wheel_style, HUB_COLOURS[attrs.hub_colour]
            )
    if attrs.sticker is not None:
        _add_sticker(parts, plan, attrs)
    return list(parts.values())


def _wheel_ground_points(plan: BodyPlan) -> np.ndarray:
    """(M, 3) points where the wheels touch the ground: wheels reach below the body."""
    base = next(b for b in plan.blocks if b.name == plan.wheel_block)
    r, w = plan.wheel_radius, base.half_width[0]
    return np.array([[x + dx, y, 0.0] for x in plan.wheels_x for dx in (-r, r) for y in (-w, w)])


@dataclass(frozen=True, eq=False)
class VehicleModel:
    """One identity ready to draw: its parts and ``extent`` float64 (M, 3), the points framing must show."""

    attrs: VehicleAttributes
    parts: list[Part]
    extent: np.ndarray

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.extent.min(axis=0), self.extent.max(axis=0)


def build_vehicle_model(attrs: VehicleAttributes) -> VehicleModel:
    """Parts plus every corner and wheel contact point (built once per identity)."""
    parts = build_vehicle(attrs)
    corners = np.concatenate([face.corners for part in parts for face in part.faces.values()])
    plan = _scaled_plan(_PLANS[attrs.body_type], attrs.scale)
    return VehicleModel(attrs, parts, np.concatenate([corners, _wheel_ground_points(plan)]))


# ----------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class ViewMode:
    """One Gaussian component of a camera's viewpoint mixture (degrees).

    Azimuth 0 looks at the vehicle's front, 90 at its left side, 180 at its back.
    """

    weight: float
    azimuth: float
    azimuth_std: float
    elevation: float
    elevation_std: float


VIEW_TEMPLATES: tuple[tuple[str, tuple[ViewMode, ...]], ...] = (
    ("front", (ViewMode(1.0, 0.0, 12.0, 14.0, 4.0),)),
    ("back", (ViewMode(1.0, 180.0, 12.0, 16.0, 4.0),)),
    ("side", (ViewMode(0.5, 90.0, 10.0, 10.0, 3.0), ViewMode(0.5, 270.0, 10.0, 10.0, 3.0))),
    ("top", (ViewMode(0.5, 30.0, 25.0, 64.0, 6.0), ViewMode(0.5, 210.0, 25.0, 64.0, 6.0))),
    (
        "front_oblique",
        (ViewMode(0.5, 45.0, 12.0, 22.0, 5.0), ViewMode(0.5, 315.0, 12.0, 22.0, 5.0)),
    ),
    (
        "back_oblique",
        (ViewMode(0.5, 135.0, 12.0, 22.0, 5.0), ViewMode(0.5, 225.0, 12.0, 22.0, 5.0)),
    ),
)


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees: viewpoint mixture, framing, light and image degradations.

    ``fill``: (min, max) fraction of the shorter image side the vehicle spans;
    ``distance_factor``: camera distance in vehicle lengths (perspective strength);
    ``light_dir``: unit vector towards the light; ``blur_sigma`` in pixels at 128 px;
    ``resolution_scale``: the image is rendered, shrunk by this factor and enlarged back;
    ``background``: "road" (asphalt, lane marks), "plaza" (tiles) or "flat".
    """

    cam: int
    template: str
    view_modes: tuple[ViewMode, ...]
    fill: tuple[float, float]
    distance_factor: float
    roll_std: float
    offset_std: float
    light_dir: tuple[float, float, float]
    ambient: float
    brightness: float
    brightness_jitter: float
    colour_cast: tuple[float, float, float]
    background: str
    ground_colour: tuple[int, int, int]
    accent_colour: tuple[int, int, int]
    horizon_colour: tuple[int, int, int]
    blur_sigma: float
    resolution_scale: float
    noise_std: float


def camera_styles(num_cameras: int, seed: int, looks: int | None = None) -> list[CameraStyle]:
    """Every camera's style; with ``looks``, camera ``c`` wears camera ``c % looks``'s look.

    The view template and its viewpoint mixture always stay the camera's own.
    """
    own = [camera_style(cam, seed) for cam in range(num_cameras)]
    if looks is None:
        return own
    return [
        replace(own[cam % looks], cam=cam, template=style.template, view_modes=style.view_modes)
        for cam, style in enumerate(own)
    ]


def camera_style(cam: int, seed: int) -> CameraStyle:
    """The look of 0-based camera ``cam``: view template ``cam % 6``, the rest drawn per camera."""
    rng = _rng(seed, _TAG_CAMERA, cam)
    template, modes = VIEW_TEMPLATES[cam % len(VIEW_TEMPLATES)]
    light_az, light_el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(30, 70))
    grey = int(rng.integers(70, 125))
    fill_low = float(rng.uniform(0.68, 0.8))
    return CameraStyle(
        cam=cam,
        template=template,
        view_modes=modes,
        fill=(round(fill_low, 3), round(fill_low + 0.12, 3)),
        distance_factor=round(float(rng.uniform(2.5, 4.0)), 3),
        roll_std=3.0,
        offset_std=0.04,
        light_dir=tuple(
            round(float(c), 4)
            for c in (
                math.cos(light_el) * math.cos(light_az),
                math.cos(light_el) * math.sin(light_az),
                math.sin(light_el),
            )
        ),
        ambient=round(float(rng.uniform(0.35, 0.55)), 3),
        brightness=round(float(rng.uniform(0.75, 1.15)), 3),
        brightness_jitter=0.08,
        colour_cast=tuple(round(float(c), 3) for c in 1.0 + rng.uniform(-0.12, 0.12, size=3)),
        background=_pick(rng, ("road", "plaza", "flat")),
        ground_colour=_jitter_colour(rng, (grey, grey, grey), 10),
        accent_colour=_jitter_colour(
            rng, _pick(rng, ((236, 236, 230), (230, 196, 60), (150, 140, 120))), 10
        ),
        horizon_colour=_jitter_colour(rng, (150, 160, 170), 40),
        blur_sigma=round(float(rng.uniform(0.0, 1.0)), 3),
        resolution_scale=round(float(rng.uniform(0.5, 1.0)), 3),
        noise_std=round(float(rng.uniform(1.0, 5.0)), 3),
    )


@dataclass(frozen=True)
class CameraPose:
    """Viewpoint around the vehicle: degrees, and metres from the target."""

    azimuth_deg: float
    elevation_deg: float
    roll_deg: float
    distance: float


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """World -> pixel projection.

    ``rotation`` float64 (3, 3): rows are the camera's right, down and forward axes in
    world coordinates; ``centre`` float64 (3,) the camera position. Pixel (col, row)
    = focal * (x / z, y / z) + (cx, cy); integer coordinates are pixel centres.
    """

    rotation: np.ndarray
    centre: np.ndarray
    focal: float
    cx: float
    cy: float

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera coordinates (z = depth)."""
        return (points - self.centre) @ self.rotation.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates (col, row)."""
        cam = self.to_camera(points)
        return self.focal * cam[:, :2] / cam[:, 2:3] + np.array([self.cx, self.cy])

    def pixel_rays(self, height: int, width: int) -> np.ndarray:
        """Unit world directions through every pixel centre, float64 (height, width, 3)."""
        cols, rows = np.meshgrid(
            np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
        )
        local = np.stack(
            [(cols - self.cx) / self.focal, (rows - self.cy) / self.focal, np.ones_like(cols)], -1
        )
        rays = local @ self.rotation
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def sample_camera_pose(
    style: CameraStyle, rng: np.random.Generator, vehicle_length: float
) -> CameraPose:
    """Draw one viewpoint from the camera's mixture."""
    weights = np.array([m.weight for m in style.view_modes])
    mode = style.view_modes[int(rng.choice(len(weights), p=weights / weights.sum()))]
    elevation = float(np.clip(rng.normal(mode.elevation, mode.elevation_std), 3.0, 85.0))
    return CameraPose(
        azimuth_deg=float(rng.normal(mode.azimuth, mode.azimuth_std) % 360.0),
        elevation_deg=elevation,
        roll_deg=float(rng.normal(0.0, style.roll_std)),
        distance=float(style.distance_factor * vehicle_length),
    )


def look_at(pose: CameraPose, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3, 3), centre (3,)) of a camera at ``pose`` looking at ``target``, z up."""
    az, el, roll = (math.radians(a) for a in (pose.azimuth_deg, pose.elevation_deg, pose.roll_deg))
    offset = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    centre = target + pose.distance * offset
    forward = -offset
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward]), centre


def frame_camera(
    pose: CameraPose,
    target: np.ndarray,
    points: np.ndarray,
    image_size: tuple[int, int],
    fill: float,
    offset: tuple[float, float],
) -> PinholeCamera:
    """Choose focal length and principal point so ``points`` span ``fill`` of the image.

    This mimics a detector crop, as in VeRi. ``offset`` shifts the vehicle by a
    fraction of the image size.
    """
    rotation, centre = look_at(pose, target)
    cam = (points - centre) @ rotation.T
    normalised = cam[:, :2] / cam[:, 2:3]
    lo, hi = normalised.min(axis=0), normalised.max(axis=0)
    height, width = image_size
    extent = np.maximum(hi - lo, 1e-6)
    focal = fill * min(width / extent[0], height / extent[1])
    mid = (lo + hi) / 2
    cx = width / 2 - 0.5 - focal * mid[0] + offset[0] * width
    cy = height / 2 - 0.5 - focal * mid[1] + offset[1] * height
    return PinholeCamera(rotation, centre, float(focal), float(cx), float(cy))


# ----------------------------------------------------------------------------- drawing


def _paint_before(a: Part, b: Part, eye: np.ndarray) -> int | None:
    """-1 when ``a`` must be drawn before ``b``, 1 for after, None when no plane separates them.

    If an axis-aligned plane has ``a`` on one side and ``b`` and the eye on the other,
    no sight line to ``b`` can pass through ``a`` (the eye's half-space is convex), so
    drawing ``a`` first is safe. Two planes that disagree mean neither part can hide
    the other, and either order is right.
    """
    for axis in range(3):
        if a.hi[axis] <= b.lo[axis] + 1e-9:
            return -1 if eye[axis] > (a.hi[axis] + b.lo[axis]) / 2 else 1
        if b.hi[axis] <= a.lo[axis] + 1e-9:
            return 1 if eye[axis] > (b.hi[axis] + a.lo[axis]) / 2 else -1
    return None


def draw_order(parts: list[Part], eye: np.ndarray) -> list[Part]:
    """``parts`` in a back-to-front order for the painter's algorithm.

    A topological sort of the pairwise ``_paint_before`` constraints; among parts that
    are free to go next, the farthest goes first (also the fallback should boxes overlap).
    """
    distance = [float(np.linalg.norm((p.lo + p.hi) / 2 - eye)) for p in parts]
    later: list[list[int]] = [[] for _ in parts]
    waiting_on = [0] * len(parts)
    for i, j in itertools.combinations(range(len(parts)), 2):
        order = _paint_before(parts[i], parts[j], eye)
        if order is not None:
            first, second = (i, j) if order < 0 else (j, i)
            later[first].append(second)
            waiting_on[second] += 1
    ordered, left = [], set(range(len(parts)))
    while left:
        free = [i for i in left if waiting_on[i] == 0] or list(left)
        nxt = max(free, key=lambda i: (distance[i], -i))
        ordered.append(parts[nxt])
        left.remove(nxt)
        for k in later[nxt]:
            waiting_on[k] -= 1
    return ordered


def face_is_visible(face: Face, eye: np.ndarray) -> bool:
    """Back-face culling: the outward normal points towards the eye."""
    return bool(face.normal @ (eye - face.corners.mean(axis=0)) > 1e-9)


def shade(
    colour: tuple[int, int, int], normal: np.ndarray, light_dir: np.ndarray, ambient: float
) -> tuple[int, ...]:
    """Lambertian shading of an RGB paint on a face with unit ``normal``."""
    intensity = ambient + (1.0 - ambient) * max(0.0, float(normal @ light_dir))
    return tuple(round(min(255.0, c * intensity)) for c in colour)


def polygon_coverage(
    polygon: np.ndarray, height: int, width: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels whose centres lie in a convex polygon: (row/col window, bool mask of that window).

    ``polygon`` float (K, 2) (col, row) vertices in either winding; pixel centres sit at
    integer coordinates and points on an edge count as inside. Sampling pixel centres
    (not PIL's rounded, outlined fill) keeps faces that share an edge gap-free and makes
    the mask agree with a ray cast through each pixel centre. None when nothing is covered.
    """
    lo = np.maximum(np.ceil(polygon.min(axis=0)).astype(np.int64), 0)
    hi = np.minimum(np.floor(polygon.max(axis=0)).astype(np.int64), [width - 1, height - 1])
    following = polygon[np.r_[1 : len(polygon), 0]]
    edges = following - polygon
    twice_area = float(np.sum(polygon[:, 0] * following[:, 1] - following[:, 0] * polygon[:, 1]))
    if (hi < lo).any() or abs(twice_area) < 1e-12:
        return None
    cols = np.arange(lo[0], hi[0] + 1, dtype=np.float64)[None, None, :]
    rows = np.arange(lo[1], hi[1] + 1, dtype=np.float64)[None, :, None]
    start_col, start_row = polygon[:, 0, None, None], polygon[:, 1, None, None]
    # Edge x (pixel - edge start) has the sign of the polygon's area for inside pixels.
    cross = edges[:, 0, None, None] * (rows - start_row) - edges[:, 1, None, None] * (
        cols - start_col
    )
    inside = np.all(cross * math.copysign(1.0, twice_area) >= -1e-9, axis=0)
    return (slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1)), inside


def _fill(image: np.ndarray, mask: np.ndarray, polygon: np.ndarray, colour, label: int) -> None:
    covered = polygon_coverage(polygon, *mask.shape)
    if covered is not None:
        window, inside = covered
        image[window][inside] = colour
        mask[window][inside] = label


def draw_vehicle(
    image: np.ndarray,
    mask: np.ndarray,
    parts: list[Part],
    camera: PinholeCamera,
    light_dir,
    ambient: float,
) -> None:
    """Paint visible faces and decals into ``image`` uint8 (H, W, 3), their labels into ``mask`` uint8 (H, W)."""
    light = np.asarray(light_dir, dtype=np.float64)
    for part in draw_order(parts, camera.centre):
        for face in filter(lambda f: face_is_visible(f, camera.centre), part.faces.values()):
            outline = camera.project(face.corners)
            _fill(image, mask, outline, shade(face.colour, face.normal, light, ambient), face.label)
            for decal in face.decals:
                points = camera.project(face.point(decal.uv))
                _fill(
                    image,
                    mask,
                    points,
                    shade(decal.colour, face.normal, light, ambient),
                    face.label,
                )


def _value_noise(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a periodic (G, G) random grid at float coordinates, same shape as x."""
    g = grid.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    i0, j0 = x0.astype(np.int64) % g, y0.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    top = grid[i0, j0] * (1 - fx) + grid[i1, j0] * fx
    bottom = grid[i0, j1] * (1 - fx) + grid[i1, j1] * fx
    return top * (1 - fy) + bottom * fy


def _ground_texture(
    style: CameraStyle, gx: np.ndarray, gy: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """RGB float32 (..., 3) of the ground plane at world coordinates (gx, gy)."""
    base = np.asarray(style.ground_colour, dtype=np.float32)
    accent = np.asarray(style.accent_colour, dtype=np.float32)
    grain = _value_noise(gx / 1.3, gy / 1.3, rng.standard_normal((16, 16)))[..., None]
    colour = base * (1.0 + 0.1 * grain)
    if style.background == "plaza":
        tile = float(rng.uniform(0.8, 1.6))
        checker = ((np.floor(gx / tile) + np.floor(gy / tile)) % 2)[..., None]
        return colour * (1 - 0.4 * checker) + 0.4 * checker * accent
    lane_half = float(rng.uniform(1.6, 2.1))
    shift = float(rng.uniform(-0.4, 0.4))
    on_line = (np.abs(np.abs(gy - shift) - lane_half) < 0.08) & ((gx % 6.0) < 3.0)
    return np.where(on_line[..., None], accent, colour)


def render_background(
    camera: PinholeCamera, style: CameraStyle, image_size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """The scene behind the vehicle, RGB uint8 (H, W, 3): ground seen through the camera, or flat."""
    height, width = image_size
    travel = float(rng.uniform(0.0, 50.0))  # where along the road the vehicle is
    if style.background == "flat":
        return np.broadcast_to(np.asarray(style.ground_colour, np.uint8), (height, width, 3)).copy()
    rays = camera.pixel_rays(height, width)
    down = np.minimum(rays[..., 2], -1e-3)
    reach = -camera.centre[2] / down
    gx = camera.centre[0] + reach * rays[..., 0] + travel
    gy = camera.centre[1] + reach * rays[..., 1]
    ground = _ground_texture(style, gx, gy, rng)
    sky = np.asarray(style.horizon_colour, dtype=np.float32)
    image = np.where((rays[..., 2] < -1e-3)[..., None], ground, sky)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def apply_camera_effects(
    image: np.ndarray, style: CameraStyle, rng: np.random.Generator
) -> np.ndarray:
    """Resolution loss, blur, brightness / colour cast and sensor noise; uint8 (H, W, 3) in and out."""
    height, width = image.shape[:2]
    picture = Image.fromarray(image)
    if style.resolution_scale < 1.0:
        small = (
            max(8, round(width * style.resolution_scale)),
            max(8, round(height * style.resolution_scale)),
        )
        picture = picture.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if style.blur_sigma > 0:
        picture = picture.filter(
            ImageFilter.GaussianBlur(style.blur_sigma * min(height, width) / 128)
        )
    gain = style.brightness * (1.0 + rng.uniform(-style.brightness_jitter, style.brightness_jitter))
    pixels = np.asarray(picture, dtype=np.float32) * (
        gain * np.asarray(style.colour_cast, dtype=np.float32)
    )
    pixels += style.noise_std * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class RenderedSample:
    """``image`` uint8 (H, W, 3), ``mask`` uint8 (H, W) in 0..4, and the camera that drew them."""

    image: np.ndarray
    mask: np.ndarray
    pose: CameraPose
    camera: PinholeCamera


def render_sample(
    vehicle: VehicleModel, style: CameraStyle, image_size: tuple[int, int], rng: np.random.Generator
) -> RenderedSample:
    """One image of ``vehicle`` through camera ``style``; all randomness comes from ``rng``."""
    lo, hi = vehicle.bounds
    target = (lo + hi) / 2
    pose = sample_camera_pose(style, rng, vehicle_length=float(hi[0] - lo[0]))
    fill = float(rng.uniform(*style.fill))
    offset = tuple(float(o) for o in rng.normal(0.0, style.offset_std, size=2))
    camera = frame_camera(pose, target, vehicle.extent, image_size, fill, offset)
    image = render_background(camera, style, image_size, rng)
    mask = np.full(image_size, BACKGROUND, dtype=np.uint8)
    draw_vehicle(image, mask, vehicle.parts, camera, style.light_dir, style.ambient)
    image = apply_camera_effects(image, style, rng)
    return RenderedSample(image, mask, pose, camera)


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SyntheticSummary:
    """What ``make_synthetic`` wrote."""

    out_dir: str
    num_train_ids: int
    num_test_ids: int
    num_train_images: int
    num_query_images: int
    num_gallery_images: int
    seconds: float


def veri_name(vid: int, cam: int, frame: int) -> str:
    """VeRi-776 file name for 1-based ``vid``, 0-based ``cam`` and a frame index."""
    return f"{vid:04d}_c{cam + 1:03d}_{frame:08d}_0.jpg"


def _frame_indices(seed: int, vid: int, cam: int, count: int) -> list[int]:
    """Increasing frame numbers of one vehicle's passage through one camera."""
    start = int(_rng(seed, _TAG_FRAME, vid, cam).integers(0, 10_000_000))
    return [start + 25 * k for k in range(count)]


def _write_sample(sample: RenderedSample, image_path: Path, mask_path: Path) -> None:
    Image.fromarray(sample.image).save(image_path, format="JPEG", quality=JPEG_QUALITY)
    Image.fromarray(sample.mask, mode="L").save(mask_path, format="PNG")


def _choose_queries(
    seed: int, vid: int, num_cameras: int, images_per_camera: int, count: int
) -> list[tuple[int, int]]:
    """``count`` (camera, k) pairs from distinct cameras."""
    rng = _rng(seed, _TAG_QUERY, vid)
    cams = sorted(int(c) for c in rng.choice(num_cameras, size=count, replace=False))
    return [(cam, int(rng.integers(images_per_camera))) for cam in cams]


def _validate(
    num_ids, num_cameras, images_per_camera, image_size, test_fraction, queries_per_id, camera_looks
) -> int:
    """Check the arguments; return the number of training ids."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction={test_fraction!r}: expected a float strictly between 0 and 1"
        )
    num_test = round(num_ids * test_fraction)
    if num_ids < 2 or not 1 <= num_test <= num_ids - 1:
        raise ValueError(
            f"num_ids={num_ids!r} with test_fraction={test_fraction!r} leaves an empty split; "
            "expected num_ids >= 2 and both splits non-empty"
        )
    if num_cameras < 1 or images_per_camera < 1:
        raise ValueError(
            f"num_cameras={num_cameras!r}, images_per_camera={images_per_camera!r}: expected >= 1"
        )
    if not 1 <= queries_per_id <= num_cameras:
        raise ValueError(
            f"queries_per_id={queries_per_id!r}: queries come from distinct cameras, "
            f"expected 1..num_cameras ({num_cameras})"
        )
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"image_size={image_size!r}: expected (height, width), both >= 16 pixels")
    if camera_looks is not None and not 1 <= camera_looks <= num_cameras:
        raise ValueError(
            f"camera_looks={camera_looks!r}: expected None or 1..num_cameras ({num_cameras})"
        )
    return num_ids - num_test


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    folders = [out / d for d in SPLIT_DIRS.values()] + [out / MASK_DIR]
    used = [f for f in folders if f.is_dir() and any(f.iterdir())]
    if used and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(f.name for f in used)} not empty); "
            "choose an empty folder or pass overwrite=True"
        )
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _write_identity(
    out: Path,
    vehicle: VehicleModel,
    split: str,
    styles: list[CameraStyle],
    seed: int,
    images_per_camera: int,
    image_size: tuple[int, int],
) -> dict[tuple[int, int], dict]:
    """Render and write every image of one identity and its masks; (camera, k) -> meta record."""
    vid, records = vehicle.attrs.vid, {}
    for cam, style in enumerate(styles):
        for k, frame in enumerate(_frame_indices(seed, vid, cam, images_per_camera)):
            sample = render_sample(vehicle, style, image_size, _rng(seed, _TAG_IMAGE, vid, cam, k))
            name = veri_name(vid, cam, frame)
            image_path = out / SPLIT_DIRS[split] / name
            _write_sample(sample, image_path, out / MASK_DIR / f"{image_path.stem}.png")
            pose = asdict(sample.pose)
            records[cam, k] = {"name": name, "split": split, "vid": vid, "cam": cam, **pose}
    return records


def _copy_queries(out: Path, records: dict[tuple[int, int], dict], chosen) -> list[dict]:
    """Copy the chosen gallery images into ``image_query`` (VeRi: same name, same bytes)."""
    queries = []
    for cam, k in chosen:
        record = records[cam, k]
        gallery_path = out / SPLIT_DIRS["gallery"] / record["name"]
        shutil.copyfile(gallery_path, out / SPLIT_DIRS["query"] / record["name"])
        queries.append({"name": record["name"], "split": "query", "vid": record["vid"], "cam": cam})
    return queries


def ensure_synthetic(out_dir: str | Path, **parameters) -> bool:
    """Draw ``make_synthetic(out_dir, **parameters)`` unless a finished set drawn with the
    same parameters is already there; returns whether it drew.

    ``make_synthetic`` writes ``meta.json`` last, so a folder without it is an interrupted
    drawing, and one whose recorded parameters differ (an older config's set) is stale:
    both are drawn anew in place.
    """
    out = Path(out_dir).expanduser()
    wanted = {k: list(v) if k == "image_size" else v for k, v in parameters.items()}
    meta = out / META_FILE
    if meta.is_file():
        recorded = json.loads(meta.read_text()).get("parameters", {})
        stale = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
        if not stale:
            return False
        logger.warning("redrawing the synthetic set in %s: (was, now) %s", out, stale)
    logger.info("drawing the synthetic set into %s", out)
    make_synthetic(out, overwrite=True, **parameters)
    return True


def make_synthetic(
    out_dir: str | Path,
    num_ids: int = 40,
    num_cameras: int = 6,
    seed: int = 0,
    images_per_camera: int = 2,
    image_size: tuple[int, int] = (128, 128),
    test_fraction: float = 0.5,
    queries_per_id: int = 2,
    near_duplicate_fraction: float = 0.5,
    camera_looks: int | None = None,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Draw the synthetic multi-view set into ``out_dir`` (layout in the module docstring).

    Ids ``1..T`` train, ``T+1..num_ids`` test with ``T = num_ids - round(num_ids *
    test_fraction)``; every id is seen ``images_per_camera`` times by every camera, and
    each test id gets ``queries_per_id`` queries from distinct cameras. ``image_size``
    is (height, width). ``near_duplicate_fraction`` of the id pairs (v, v + 1) in each
    split (at least one pair) are near-duplicates. The same arguments give
    byte-identical files. ``overwrite`` replaces an existing set in ``out_dir``.

    ``camera_looks``: how many distinct looks (light, colour cast, background, blur,
    resolution, framing) the cameras share; camera ``c`` keeps its own view template but
    takes the look of camera ``c % camera_looks``. ``None`` gives every camera its own
    look. Fewer looks leave the viewpoint as the main difference between cameras, which
    a small backbone needs to bootstrap cross-camera pseudo-labels (see ``camera_styles``).
    """
    start = time.perf_counter()
    parameters = {
        "num_ids": num_ids,
        "num_cameras": num_cameras,
        "seed": seed,
        "images_per_camera": images_per_camera,
        "image_size": list(image_size),
        "test_fraction": test_fraction,
        "queries_per_id": queries_per_id,
        "near_duplicate_fraction": near_duplicate_fraction,
        "camera_looks": camera_looks,
        "jpeg_quality": JPEG_QUALITY,
    }
    num_train_ids = _validate(
        num_ids,
        num_cameras,
        images_per_camera,
        image_size,
        test_fraction,
        queries_per_id,
        camera_looks,
    )
    out = Path(out_dir).expanduser()
    _prepare_out_dir(out, overwrite)
    identities = assign_identities(num_ids, num_train_ids, seed, near_duplicate_fraction)
    styles = camera_styles(num_cameras, seed, camera_looks)
    images: list[dict] = []
    for attrs in identities:
        split = "train" if attrs.vid <= num_train_ids else "gallery"
        vehicle = build_vehicle_model(attrs)
        records = _write_identity(out, vehicle, split, styles, seed, images_per_camera, image_size)
        images += records.values()
        if split == "gallery":
            chosen = _choose_queries(
                seed, attrs.vid, num_cameras, images_per_camera, queries_per_id
            )
            images += _copy_queries(out, records, chosen)
    counts = {split: sum(r["split"] == split for r in images) for split in SPLIT_DIRS}
    meta = {
        "generator": __name__,
        "parameters": parameters,
        "view_labels": dict(enumerate(VIEW_NAMES)),
        "train_ids": [1, num_train_ids],
        "test_ids": [num_train_ids + 1, num_ids],
        "counts": counts,
        "cameras": [asdict(s) for s in styles],
        "identities": [asdict(a) for a in identities],
        "images": images,
    }
    (out / META_FILE).write_text(json.dumps(_rounded(meta), indent=1, sort_keys=True))
    summary = SyntheticSummary(
        out_dir=str(out),
        num_train_ids=num_train_ids,
        num_test_ids=num_ids - num_train_ids,
        num_train_images=counts["train"],
        num_query_images=counts["query"],
        num_gallery_images=counts["gallery"],
        seconds=round(time.perf_counter() - start, 3),
    )
    logger.info(
        "synthetic set in %s: %d train ids / %d images, %d test ids / %d query + %d gallery "
        "images (%.1f s)",
        out,
        num_train_ids,
        counts["train"],
        summary.num_test_ids,
        counts["query"],
        counts["gallery"],
        summary.seconds,
    )
    return summary
