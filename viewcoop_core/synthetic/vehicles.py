"""Vehicle geometry: convex blocks per body type, decals, faces with view labels."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from viewcoop_core.synthetic.common import (
    CARGO_COLOURS,
    FACE_LABELS,
    HUB_COLOURS,
    LIGHT_BAR_BLUE,
    LIGHT_BAR_RED,
    MARK_COLOURS,
    PAINTS,
    ROOF_COLOURS,
)
from viewcoop_core.synthetic.identities import VehicleAttributes

logger = logging.getLogger(__name__)


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
        name: Face(name, FACE_LABELS[name], quad, _outward_normal(quad, interior), colour, [])
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
    decals = [Decal(_circle_uv(face, centre, radius), PAINTS["tyre"])]
    if style == "dark":
        decals.append(Decal(_circle_uv(face, centre, 0.58 * radius), (48, 48, 52)))
        decals.append(Decal(_circle_uv(face, centre, 0.2 * radius, 10), hub))
        return decals
    decals.append(Decal(_circle_uv(face, centre, 0.6 * radius), hub))
    if style == "spoke":
        decals += [
            Decal(_spoke_uv(face, centre, 0.6 * radius, a), PAINTS["tyre"])
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
            _box("light_bar_r", span, 0.4 * half, height, LIGHT_BAR_RED, y=-0.4 * half),
            _box("light_bar_l", span, 0.4 * half, height, LIGHT_BAR_BLUE, y=0.4 * half),
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
        "trim": PAINTS["trim"],
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
        _add_box_decal(parts, spec, PAINTS[spec.paint])
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
