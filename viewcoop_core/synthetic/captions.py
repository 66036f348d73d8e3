"""Captions of the synthetic vehicles for contrastive pretraining: what a vehicle looks
like (type, colour, marks) and which view an image shows, from the generator's
``meta.json`` and the image's view mask."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from viewcoop_core.data.masks import load_mask
from viewcoop_core.synthetic.writer import MASK_DIR, META_FILE, SPLIT_DIRS
from viewcoop_core.views import view_counts
from viewcoop_core.vocabulary import VIEW_NAMES

# The generator's colour names are already plain words except these.
_COLOUR_WORDS = {"sky": "light blue", "red_blue": "red and blue"}
_BODY_WORDS = {"suv": "SUV"}
_ROOF_WORDS = {"rack": "roof rack", "light_bar": "light bar", "roof_box": "roof box"}
_VIEW_PHRASES = {
    "front": "seen from the front",
    "back": "seen from behind",
    "side": "seen from the side",
    "top": "seen from above",
}
# Splits whose images are pretraining data; "query" holds byte copies of gallery images.
_IMAGE_SPLITS = ("train", "gallery")


def colour_word(name: str) -> str:
    """Caption word for one of the generator's colour names (``"sky"`` -> ``"light blue"``)."""
    return _COLOUR_WORDS.get(name, name.replace("_", " "))


def _article(phrase: str) -> str:
    return "an" if phrase[0].lower() in "aeiou" else "a"


def _mark_phrases(attributes: Mapping) -> list[str]:
    """The visible marks of one identity, each as a noun phrase with its colour.

    The windshield sticker's side is left out on purpose: training flips images
    horizontally, which would turn a left sticker into a right one.
    """
    marks = []
    stripe = attributes.get("stripe")
    if stripe is not None:
        colour = colour_word(attributes["stripe_colour"])
        single = f"{_article(colour)} {colour} side stripe"
        marks.append(f"double {colour} side stripes" if stripe == "double" else single)
    roof_item = attributes.get("roof_item")
    if roof_item is not None:
        phrase = f"{colour_word(attributes['roof_colour'])} {_ROOF_WORDS[roof_item]}"
        marks.append(f"{_article(phrase)} {phrase}")
    sticker = attributes.get("sticker")
    if sticker is not None:
        place = "rear window" if sticker == "rear" else "windshield"
        phrase = f"{colour_word(attributes['sticker_colour'])} {place} sticker"
        marks.append(f"{_article(phrase)} {phrase}")
    marks.append(_wheel_phrase(attributes["wheel_style"], colour_word(attributes["hub_colour"])))
    return marks


def _wheel_phrase(style: str, hub: str) -> str:
    """Wheels as drawn: "disc" a hub-coloured disc, "spoke" with five spokes, "dark" a
    dark rim around a small hub-coloured centre."""
    if style == "dark":
        return f"dark wheels with {hub} centres"
    return f"{hub} {'spoked' if style == 'spoke' else 'disc'} wheels"


def caption_for(attributes: Mapping, view: str | None) -> str:
    """One English sentence describing a vehicle and the side it is seen from.

    Args:
        attributes: one entry of ``meta.json["identities"]`` (a ``VehicleAttributes``
            as a dict): ``body_type``, ``colour_name``, ``cargo_colour``, ``stripe``,
            ``stripe_colour``, ``roof_item``, ``roof_colour``, ``sticker``,
            ``sticker_colour``, ``wheel_style``, ``hub_colour``.
        view: the dominant view, one of ``front``, ``back``, ``side``, ``top``, or
            ``None`` to leave the viewpoint out.

    Returns:
        e.g. ``"a photo of a red sedan with a yellow side stripe, a black roof rack and
        silver spoked wheels, seen from the front."``
    """
    missing = [key for key in ("body_type", "colour_name") if key not in attributes]
    if missing:
        raise KeyError(f"vehicle attributes lack {missing}; expected a meta.json identity entry")
    if view is not None and view not in _VIEW_PHRASES:
        raise ValueError(f"view={view!r}: expected one of {list(_VIEW_PHRASES)} or None")
    body = _BODY_WORDS.get(attributes["body_type"], attributes["body_type"])
    subject = f"{colour_word(attributes['colour_name'])} {body}"
    marks = _mark_phrases(attributes)
    if attributes["body_type"] == "truck":
        marks.insert(
            0,
            f"{_article(attributes['cargo_colour'])} "
            f"{colour_word(attributes['cargo_colour'])} cargo box",
        )
    described = marks[0] if len(marks) == 1 else f"{', '.join(marks[:-1])} and {marks[-1]}"
    sentence = f"a photo of {_article(subject)} {subject} with {described}"
    if view is not None:
        sentence += f", {_VIEW_PHRASES[view]}"
    return sentence + "."


def dominant_view(mask: np.ndarray) -> str | None:
    """The view (front/back/side/top) covering most vehicle pixels of a view mask.

    ``mask`` is uint8 [H, W] with values 0..4; returns ``None`` without foreground.
    Ties go to the earlier name in ``VIEW_NAMES``.
    """
    counts = view_counts(mask, patch_size=None, image_size=mask.shape)
    if counts.sum() == 0:
        return None
    return VIEW_NAMES[int(np.argmax(counts))]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CaptionedImage:
    """One pretraining image, its identity and its two captions.

    ``caption`` names the image's dominant view (``view``, from its mask);
    ``identity_caption`` is the same sentence without it, true of every image of the
    vehicle.
    """

    path: str
    vid: int
    view: str | None
    caption: str
    identity_caption: str


def read_captioned_images(data_root: str | os.PathLike) -> list[CaptionedImage]:
    """Every train and gallery image of a synthetic set, captioned from ``meta.json``."""
    root = Path(data_root).expanduser()
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} does not exist: pretraining needs a set written by "
            "viewcoop_core.synthetic.make_synthetic (image_train/, image_test/, "
            "masks/ and meta.json with per-identity attributes)"
        )
    meta = json.loads(meta_path.read_text())
    identities = {int(entry["vid"]): entry for entry in meta["identities"]}
    pairs = []
    for record in meta["images"]:
        if record["split"] not in _IMAGE_SPLITS:
            continue
        image_path = root / SPLIT_DIRS[record["split"]] / record["name"]
        view = dominant_view(load_mask(root / MASK_DIR / f"{image_path.stem}.png"))
        attributes = identities[int(record["vid"])]
        pairs.append(
            CaptionedImage(
                path=str(image_path),
                vid=int(record["vid"]),
                view=view,
                caption=caption_for(attributes, view),
                identity_caption=caption_for(attributes, None),
            )
        )
    if not pairs:
        raise ValueError(f"{meta_path} lists no train or gallery images")
    return pairs


def load_images(paths: Sequence[str]) -> list[Image.Image]:
    """Decode every image once; the whole pretraining set fits in memory (~50 KB each)."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images
