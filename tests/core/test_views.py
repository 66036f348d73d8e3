"""View proportions (paper Eq. 1) against a brute-force reference written here."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from viewcoop_core.views import (
    compute_view_ratios,
    parse_patch_size,
    ratios_to_percent,
    view_ratios,
)
from viewcoop_core.vocabulary import VIEW_NAMES

# Written out again on purpose: the test must not trust the module's own mapping.
LABEL_OF_VIEW = {"front": 1, "back": 2, "top": 3, "side": 4}
PROMPT_ORDER = ("front", "back", "side", "top")


def naive_ratios(mask: np.ndarray, patch_size: int | None) -> np.ndarray:
    """Explicit loops: majority foreground label per patch (ties -> smallest label)."""
    counts: Counter[int] = Counter()
    if patch_size is None:
        for value in mask.ravel().tolist():
            if value != 0:
                counts[value] += 1
    else:
        height, width = mask.shape
        for top in range(0, height, patch_size):
            for left in range(0, width, patch_size):
                patch = mask[top : top + patch_size, left : left + patch_size]
                pixels = Counter(v for v in patch.ravel().tolist() if v != 0)
                if not pixels:
                    continue
                best = max(pixels.values())
                counts[min(label for label, n in pixels.items() if n == best)] += 1
    total = sum(counts.values())
    if total == 0:
        return np.full(4, 0.25)
    return np.array([counts[LABEL_OF_VIEW[name]] / total for name in PROMPT_ORDER])


def random_mask(rng: np.random.Generator, shape: tuple[int, int], block: int) -> np.ndarray:
    """Blocky masks look like parsed vehicles; block=1 gives pixel noise with many ties."""
    coarse = rng.integers(0, 5, size=(shape[0] // block + 1, shape[1] // block + 1))
    mask = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[: shape[0], : shape[1]]
    return mask.astype(np.uint8)


def test_view_names_order_is_the_prompt_order():
    assert VIEW_NAMES == PROMPT_ORDER


def test_crafted_mask_majority_tie_and_background_patches():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:16, :16] = 1  # all front
    mask[:16, 16:] = 0
    mask[:10, 16:26] = 4  # 100 side pixels
    mask[10:15, 16:26] = 3  # 50 top pixels -> side wins
    # bottom-left patch stays background: not counted
    mask[16:26, 16] = 2  # 10 back pixels ...
    mask[16:26, 17] = 3  # ... 10 top pixels: tie -> back (label 2 < 3)
    ratios = view_ratios(mask, patch_size=16, image_size=(32, 32))
    np.testing.assert_allclose(ratios, [1 / 3, 1 / 3, 1 / 3, 0.0], rtol=0, atol=1e-15)
    assert ratios.dtype == np.float64


def test_tie_between_side_and_top_goes_to_top():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4] = 4  # 32 side
    mask[4:] = 3  # 32 top
    np.testing.assert_array_equal(view_ratios(mask, 8, image_size=(8, 8)), [0, 0, 0, 1])


def test_crafted_pixel_mode():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0, :6] = 1  # 6 front
    mask[1, :2] = 2  # 2 back
    mask[2, :8] = 4  # 8 side
    mask[3, :4] = 3  # 4 top
    ratios = view_ratios(mask, None, image_size=(10, 10))
    np.testing.assert_allclose(ratios, [0.3, 0.1, 0.4, 0.2], rtol=0, atol=1e-15)


@pytest.mark.parametrize("patch_size", [8, 16, 32, None])
@pytest.mark.parametrize("block", [1, 5, 13])
def test_random_masks_match_naive_reference(patch_size, block):
    rng = np.random.default_rng(100 + block + (patch_size or 0))
    for image_size in [(64, 96), (256, 256)] if block == 13 else [(64, 96)]:
        mask = random_mask(rng, image_size, block)
        ratios = view_ratios(mask, patch_size, image_size=image_size)
        np.testing.assert_allclose(ratios, naive_ratios(mask, patch_size), rtol=0, atol=1e-12)
        assert ratios.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("patch_size", [8, 16, None])
def test_mask_of_other_size_is_resized_with_nearest(patch_size):
    rng = np.random.default_rng(7)
    small = rng.integers(0, 5, size=(8, 4)).astype(np.uint8)  # height 8, width 4
    # An exact 8x upscale: nearest repeats every pixel in an 8x8 block.
    upscaled = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)  # (64, 32)
    ratios = view_ratios(small, patch_size, image_size=(64, 32))
    np.testing.assert_allclose(ratios, naive_ratios(upscaled, patch_size), rtol=0, atol=1e-12)
    # Downscaling a 2x-repeated mask must give the original back (nearest, no blending).
    large = np.repeat(np.repeat(upscaled, 2, axis=0), 2, axis=1)  # (128, 64)
    np.testing.assert_allclose(
        view_ratios(large, patch_size, image_size=(64, 32)),
        naive_ratios(upscaled, patch_size),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize("patch_size", [16, None])
def test_empty_mask_gives_uniform_ratios(patch_size, caplog):
    with caplog.at_level(logging.DEBUG, logger="viewcoop_core.views"):
        ratios = view_ratios(np.zeros((40, 40), dtype=np.uint8), patch_size, image_size=(32, 32))
    np.testing.assert_array_equal(ratios, [0.25, 0.25, 0.25, 0.25])
    assert "no foreground" in caplog.text


def test_patch_size_must_divide_image_size():
    mask = np.ones((256, 256), dtype=np.uint8)
    with pytest.raises(ValueError, match="divisor"):
        view_ratios(mask, 24)
    with pytest.raises(ValueError, match="divisor"):
        view_ratios(mask, 16, image_size=(250, 256))


def test_invalid_mask_values_and_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"0\.\.4"):
        view_ratios(np.full((8, 8), 5, dtype=np.uint8), 8, image_size=(8, 8))
    with pytest.raises(ValueError, match="single-channel"):
        view_ratios(np.zeros((8, 8, 3), dtype=np.uint8), 8, image_size=(8, 8))


def naive_largest_remainder(row: np.ndarray) -> list[int]:
    exact = [float(r) * 100 for r in row]
    floors = [int(np.floor(x + 1e-9)) for x in exact]
    remainders = [x - f for x, f in zip(exact, floors, strict=True)]
    for _ in range(100 - sum(floors)):
        best = max(range(4), key=lambda j: (round(remainders[j], 9), -j))
        floors[best] += 1
        remainders[best] = -1.0
    return floors


def test_ratios_to_percent_crafted():
    np.testing.assert_array_equal(ratios_to_percent(np.full(4, 0.25)), [25, 25, 25, 25])
    np.testing.assert_array_equal(ratios_to_percent([1 / 3, 1 / 3, 1 / 3, 0]), [34, 33, 33, 0])
    # Four exact halves, two points missing: the ties go to the earlier columns.
    np.testing.assert_array_equal(ratios_to_percent([0.125, 0.125, 0.375, 0.375]), [13, 13, 37, 37])
    # 0.29 * 100 is 28.999999999999996 in floating point; it must still read 29.
    np.testing.assert_array_equal(ratios_to_percent([0.29, 0.71, 0.0, 0.0]), [29, 71, 0, 0])


def test_ratios_to_percent_random_rows_sum_to_100_and_round_minimally():
    rng = np.random.default_rng(3)
    ratios = rng.dirichlet(np.full(4, 0.7), size=(6, 50))
    # Exact eighths: 12.5-style percents, so many ties at a remainder of one half.
    ratios[0, :10] = rng.multinomial(8, np.full(4, 0.25), size=10) / 8.0
    percent = ratios_to_percent(ratios)
    assert percent.dtype == np.int64 and percent.shape == (6, 50, 4)
    np.testing.assert_array_equal(percent.sum(axis=-1), 100)
    flat_ratios, flat_percent = ratios.reshape(-1, 4), percent.reshape(-1, 4)
    for row, got in zip(flat_ratios, flat_percent, strict=True):
        assert got.tolist() == naive_largest_remainder(row)
        half_up = np.floor(row * 100 + 0.5 + 1e-9).astype(np.int64)
        changed = np.abs(got - half_up)
        assert changed.max() <= 1
        # Each changed entry moves the sum by one, so |100 - sum| changes is the minimum.
        assert changed.sum() == abs(100 - half_up.sum())


def test_ratios_to_percent_float32_input_and_rejects_counts():
    ratios = view_ratios(np.arange(64, dtype=np.uint8).reshape(8, 8) % 5, None, (8, 8))
    percent = ratios_to_percent(ratios.astype(np.float32)[None])
    assert percent.sum() == 100
    with pytest.raises(ValueError, match="sum to 1"):
        ratios_to_percent(np.array([3.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        ratios_to_percent(np.array([0.5, 0.5]))


def write_mask(path, mask: np.ndarray, mode: str = "L") -> str:
    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("P")  # palette indices keep the label values
        image.putpalette([v for i in range(256) for v in (i * 40 % 256, i, 0)])
    image.save(path)
    return str(path)


def test_compute_view_ratios_reads_masks_and_matches_per_mask(tmp_path):
    rng = np.random.default_rng(11)
    masks = [random_mask(rng, (48, 40), 6) for _ in range(5)] + [np.zeros((48, 40), np.uint8)]
    paths = [
        write_mask(tmp_path / f"m{i}.png", m, mode="P" if i % 2 else "L")
        for i, m in enumerate(masks)
    ]
    for patch_size in (16, None):
        ratios = compute_view_ratios(paths, patch_size, image_size=(64, 32))
        assert ratios.dtype == np.float32 and ratios.shape == (6, 4)
        for mask, row in zip(masks, ratios, strict=True):
            resized = np.asarray(Image.fromarray(mask).resize((32, 64), Image.NEAREST))
            np.testing.assert_allclose(row, naive_ratios(resized, patch_size), atol=1e-7)
        threaded = compute_view_ratios(paths, patch_size, image_size=(64, 32), num_workers=2)
        np.testing.assert_array_equal(threaded, ratios)
    assert compute_view_ratios([], 16).shape == (0, 4)


def test_compute_view_ratios_names_the_bad_file(tmp_path):
    good = write_mask(tmp_path / "good.png", np.ones((16, 16)))
    bad = write_mask(tmp_path / "bad.png", np.full((16, 16), 7))
    with pytest.raises(ValueError, match=r"bad\.png"):
        compute_view_ratios([good, bad], 8, image_size=(16, 16))
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (16, 16)).save(rgb)
    with pytest.raises(ValueError, match=r"rgb\.png.*single-channel"):
        compute_view_ratios([str(rgb)], 8, image_size=(16, 16))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8, 8),
        (16, 16),
        (32, 32),
        ("16", 16),
        (" 32 ", 32),
        ("pixel", None),
        ("Pixel", None),
        (None, None),
        (np.int64(8), 8),
    ],
)
def test_parse_patch_size_accepts(value, expected):
    assert parse_patch_size(value) == expected


@pytest.mark.parametrize("value", [4, 24, "12", "patch", True, 16.0, "", -8])
def test_parse_patch_size_rejects_with_allowed_values(value):
    with pytest.raises(ValueError, match=r"\[8, 16, 32\] or 'pixel'"):
        parse_patch_size(value)
