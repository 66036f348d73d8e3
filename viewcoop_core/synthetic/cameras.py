"""Cameras: view templates, per-camera looks (light, cast, background, blur), poses."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from viewcoop_core.synthetic.common import TAG_CAMERA, rng_for
from viewcoop_core.synthetic.identities import jitter_colour, pick

logger = logging.getLogger(__name__)


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
    rng = rng_for(seed, TAG_CAMERA, cam)
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
        background=pick(rng, ("road", "plaza", "flat")),
        ground_colour=jitter_colour(rng, (grey, grey, grey), 10),
        accent_colour=jitter_colour(
            rng, pick(rng, ((236, 236, 230), (230, 196, 60), (150, 140, 120))), 10
        ),
        horizon_colour=jitter_colour(rng, (150, 160, 170), 40),
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
