"""Vehicle identities: body type, colour and marks per id, and near-duplicate pairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from viewcoop_core.synthetic.common import (
    BODY_COLOURS,
    BODY_TYPES,
    CARGO_COLOURS,
    HUB_COLOURS,
    MARK_COLOURS,
    ROOF_COLOURS,
    ROOF_ITEMS,
    STICKERS,
    STRIPES,
    TAG_IDENTITY,
    TAG_PAIRING,
    WHEEL_STYLES,
    rng_for,
)

logger = logging.getLogger(__name__)


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


def pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def jitter_colour(
    rng: np.random.Generator, rgb: tuple[int, int, int], amount: int
) -> tuple[int, int, int]:
    noisy = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(c) for c in noisy)


def sample_attributes(vid: int, seed: int) -> VehicleAttributes:
    """Draw a fresh identity from the stream ``(seed, identity, vid)``."""
    rng = rng_for(seed, TAG_IDENTITY, vid)
    colour_name = pick(rng, list(BODY_COLOURS))
    roof_item = pick(rng, ROOF_ITEMS, p=[0.4, 0.2, 0.2, 0.2])
    return VehicleAttributes(
        vid=vid,
        body_type=pick(rng, BODY_TYPES),
        scale=tuple(round(float(s), 3) for s in rng.uniform(0.94, 1.06, size=3)),
        colour_name=colour_name,
        colour=jitter_colour(rng, BODY_COLOURS[colour_name], 14),
        cargo_colour=pick(rng, list(CARGO_COLOURS)),
        stripe=pick(rng, STRIPES, p=[0.5, 0.3, 0.2]),
        stripe_colour=pick(rng, list(MARK_COLOURS)),
        roof_item=roof_item,
        roof_colour=pick(rng, list(ROOF_COLOURS[roof_item or "rack"])),
        sticker=pick(rng, STICKERS, p=[0.4, 0.2, 0.2, 0.2]),
        sticker_colour=pick(rng, list(MARK_COLOURS)),
        wheel_style=pick(rng, WHEEL_STYLES),
        hub_colour=pick(rng, list(HUB_COLOURS)),
    )


def _change_one_mark(rng: np.random.Generator, base: VehicleAttributes) -> dict:
    """Field updates that change exactly one visible mark of ``base``."""
    mark = pick(rng, ("stripe", "roof_item", "sticker", "hub_colour"))
    if mark == "hub_colour":
        return {"hub_colour": pick(rng, [h for h in HUB_COLOURS if h != base.hub_colour])}
    options = {"stripe": STRIPES, "roof_item": ROOF_ITEMS, "sticker": STICKERS}[mark]
    new_value = pick(rng, [o for o in options if o != getattr(base, mark)])
    update = {mark: new_value}
    if mark == "roof_item":
        update["roof_colour"] = pick(rng, list(ROOF_COLOURS[new_value or "rack"]))
    return update


def make_near_duplicate(base: VehicleAttributes, vid: int, seed: int) -> VehicleAttributes:
    """Identity ``vid``: a copy of ``base`` with a colour within +-6 per channel and one mark changed."""
    rng = rng_for(seed, TAG_IDENTITY, vid)
    colour = jitter_colour(rng, base.colour, 6)
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
    chosen = rng_for(seed, TAG_PAIRING, first).choice(len(starts), size=count, replace=False)
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
