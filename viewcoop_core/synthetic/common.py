"""Shared by the generator's modules: seeded random streams, mask labels, colours."""

from __future__ import annotations

import numpy as np

from viewcoop_core.vocabulary import BACK, FRONT, SIDE, TOP

BODY_TYPES = ("sedan", "suv", "truck", "bus", "van")
# Independent random streams per purpose: the first entry after the seed.
TAG_IDENTITY, TAG_PAIRING, TAG_CAMERA, TAG_IMAGE, TAG_QUERY, TAG_FRAME = range(1, 7)

FACE_LABELS = {"front": FRONT, "back": BACK, "top": TOP, "left": SIDE, "right": SIDE}

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
PAINTS: dict[str, tuple[int, int, int]] = {
    "glass": (38, 48, 64),
    "headlight": (238, 238, 216),
    "taillight": (198, 28, 32),
    "grille": (40, 40, 44),
    "plate": (228, 228, 222),
    "trim": (52, 52, 56),
    "tyre": (26, 26, 28),
    "seam": (60, 60, 64),
}
LIGHT_BAR_RED, LIGHT_BAR_BLUE = (220, 30, 30), (30, 60, 230)


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, *keys)``, never on call order."""
    return np.random.default_rng([seed, *keys])
