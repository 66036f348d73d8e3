"""Train / test image transforms: shapes, normalisation, and each augmentation's effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from viewcoop_core.data.transforms import build_test_transform, build_train_transform

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, as open_clip reports them
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = (48, 32)  # (height, width): non-square catches a swapped order


@pytest.fixture(scope="module")
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def manual_test_output(image: Image.Image) -> np.ndarray:
    resized = image.resize((SIZE[1], SIZE[0]), Image.Resampling.BICUBIC)
    x = np.asarray(resized, dtype=np.float64) / 255.0
    x = (x - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1)


def test_test_transform_is_deterministic_and_normalised(image):
    transform = build_test_transform(SIZE, MEAN, STD)
    out = transform(image)
    assert out.shape == (3, *SIZE) and out.dtype == torch.float32
    torch.testing.assert_close(transform(image), out, rtol=0, atol=0)
    np.testing.assert_allclose(out.numpy(), manual_test_output(image), rtol=0, atol=1e-5)


def test_train_transform_shapes_and_seed_dependence(image):
    transform = build_train_transform(SIZE, MEAN, STD)
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform(image)
        assert out.shape == (3, *SIZE) and out.dtype == torch.float32
        outputs.append(out)
    torch.manual_seed(0)
    torch.testing.assert_close(transform(image), outputs[0], rtol=0, atol=0)
    distinct = {tuple(o.flatten()[::97].tolist()) for o in outputs}
    assert len(distinct) == len(outputs)


def test_train_transform_without_augmentation_equals_test_transform(image):
    train = build_train_transform(SIZE, MEAN, STD, pad=0, flip_p=0.0, erase_p=0.0)
    expected = build_test_transform(SIZE, MEAN, STD)(image)
    torch.testing.assert_close(train(image), expected, rtol=0, atol=0)
    flip = build_train_transform(SIZE, MEAN, STD, pad=0, flip_p=1.0, erase_p=0.0)
    torch.testing.assert_close(flip(image), expected.flip(-1), rtol=0, atol=0)


def test_pad_and_crop_is_a_window_of_the_zero_padded_image(image):
    pad = 4
    train = build_train_transform(SIZE, MEAN, STD, pad=pad, flip_p=0.0, erase_p=0.0, crop_p=1.0)
    reference = build_test_transform(SIZE, MEAN, STD)(image)
    # Zero-valued padding pixels normalise to -mean / std.
    padded = (
        (-torch.tensor(MEAN) / torch.tensor(STD))
        .view(3, 1, 1)
        .repeat(1, SIZE[0] + 2 * pad, SIZE[1] + 2 * pad)
    )
    padded[:, pad : pad + SIZE[0], pad : pad + SIZE[1]] = reference
    offsets = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = train(image)
        matches = [
            (top, left)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            if torch.allclose(out, padded[:, top : top + SIZE[0], left : left + SIZE[1]])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1  # the crop position is random


def test_the_crop_applies_with_its_probability(image):
    reference = build_test_transform(SIZE, MEAN, STD)(image)
    never = build_train_transform(SIZE, MEAN, STD, pad=4, flip_p=0.0, erase_p=0.0, crop_p=0.0)
    torch.manual_seed(0)
    assert all(torch.equal(never(image), reference) for _ in range(10))
    half = build_train_transform(SIZE, MEAN, STD, pad=4, flip_p=0.0, erase_p=0.0, crop_p=0.5)
    unchanged = sum(torch.equal(half(image), reference) for _ in range(200))
    assert 60 < unchanged < 140  # about half (a crop at offset (4, 4) also looks unchanged)


def test_random_erasing_fills_one_rectangle_with_zero(image):
    train = build_train_transform(SIZE, MEAN, STD, pad=0, flip_p=0.0, erase_p=1.0)
    reference = build_test_transform(SIZE, MEAN, STD)(image)
    torch.manual_seed(3)
    out = train(image)
    changed = (out != reference).any(dim=0)
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert rows.numel() > 0
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert bool(changed[box].all())  # the changed pixels form one full rectangle
    assert bool((out[:, box[0], box[1]] == 0).all())
    torch.testing.assert_close(out[:, ~changed], reference[:, ~changed], rtol=0, atol=0)
