"""Drawing one image and its exact view mask: painter's order, shading, background,
camera effects."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from viewcoop_core.synthetic.cameras import (
    CameraPose,
    CameraStyle,
    PinholeCamera,
    frame_camera,
    sample_camera_pose,
)
from viewcoop_core.synthetic.vehicles import Face, Part, VehicleModel
from viewcoop_core.vocabulary import BACKGROUND

logger = logging.getLogger(__name__)


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
