"""The parser's training: its loss against a naive per-pixel loop, the loss option's
checks, and the half-resolution steps of progressive resizing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from viewcoop_core.viewparse.losses import (
    PARSER_LOSSES,
    boundary_pixels,
    boundary_weighted_cross_entropy,
    parser_loss,
    soft_dice_loss,
)
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import fit_parser, half_resolution


def naive_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> float:
    batch, classes, height, width = logits.shape
    scores = []
    for view in (1, 2, 3, 4):
        overlap = predicted = true = 0.0
        for b in range(batch):
            for y in range(height):
                for x in range(width):
                    row = [float(v) for v in logits[b, :, y, x]]
                    top = max(row)
                    exps = [math.exp(v - top) for v in row]
                    p = exps[view] / sum(exps)
                    t = 1.0 if int(target[b, y, x]) == view else 0.0
                    overlap += p * t
                    predicted += p
                    true += t
        scores.append((2 * overlap + smooth) / (predicted + true + smooth))
    return 1.0 - sum(scores) / len(scores)


def test_soft_dice_matches_a_naive_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 3, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 4, 3), generator=generator)
    target[target == 3] = 0  # one view absent from the batch: it still has its smoothed term
    expected = naive_dice_loss(logits, target)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_a_confident_correct_prediction_has_zero_dice_loss_and_a_wrong_one_about_one():
    target = torch.tensor([[[1, 2], [3, 4]]])
    right = F.one_hot(target, 5).permute(0, 3, 1, 2).double() * 50
    wrong = F.one_hot((target % 4) + 1, 5).permute(0, 3, 1, 2).double() * 50
    assert soft_dice_loss(right, target).item() == pytest.approx(0.0, abs=1e-12)
    assert soft_dice_loss(wrong, target).item() == pytest.approx(1 - 1 / 3, abs=1e-9)


def test_parser_loss_adds_the_weighted_dice_term_to_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 6, 6, generator=generator)
    target = torch.randint(0, 5, (2, 6, 6), generator=generator)
    ce = F.cross_entropy(logits, target)
    assert parser_loss(logits, target, "ce").item() == pytest.approx(ce.item())
    both = parser_loss(logits, target, "ce+dice", dice_weight=0.5)
    assert both.item() == pytest.approx(ce.item() + 0.5 * soft_dice_loss(logits, target).item())
    with pytest.raises(ValueError, match="must be one of"):
        parser_loss(logits, target, "dice")
    assert PARSER_LOSSES == ("ce", "ce+dice")


def naive_boundary(target: torch.Tensor) -> torch.Tensor:
    batch, height, width = target.shape
    out = torch.zeros_like(target, dtype=torch.bool)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        v, u = y + dy, x + dx
                        if (
                            0 <= v < height
                            and 0 <= u < width
                            and target[b, v, u] != target[b, y, x]
                        ):
                            out[b, y, x] = True
    return out


def test_boundary_pixels_and_their_weighted_cross_entropy_match_naive_loops():
    generator = torch.Generator().manual_seed(2)
    target = torch.zeros(2, 7, 6, dtype=torch.long)
    target[0, 2:5, 1:4] = 3  # a block inside the background
    target[1, :, 3:] = torch.randint(1, 5, (7, 3), generator=generator)
    edges = boundary_pixels(target)
    assert torch.equal(edges, naive_boundary(target))
    assert not edges[0, 0, 0] and edges[0, 2, 1] and not edges[0, 3, 2]  # corner, edge, inside
    logits = torch.randn(2, 5, 7, 6, generator=generator, dtype=torch.float64)
    weight = 3.0
    total = norm = 0.0
    for b in range(2):
        for y in range(7):
            for x in range(6):
                row = logits[b, :, y, x]
                pixel = float(torch.logsumexp(row, 0) - row[target[b, y, x]])
                w = 1.0 + weight * float(naive_boundary(target)[b, y, x])
                total, norm = total + w * pixel, norm + w
    got = boundary_weighted_cross_entropy(logits, target, weight)
    assert got.item() == pytest.approx(total / norm, rel=1e-12)
    plain = F.cross_entropy(logits, target).item()
    assert boundary_weighted_cross_entropy(logits, target, 0.0).item() == pytest.approx(plain)
    both = parser_loss(logits, target, "ce+dice", dice_weight=0.5, boundary_weight=weight)
    expected = total / norm + 0.5 * soft_dice_loss(logits, target).item()
    assert both.item() == pytest.approx(expected, rel=1e-12)


def test_half_resolution_keeps_each_label_where_it_was():
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[0, :4, :] = 1  # top half front, bottom half side
    masks[0, 4:, :] = 4
    images = masks[:, None].float().repeat(1, 3, 1, 1) / 4
    small_images, small_masks = half_resolution(images, masks)
    assert small_images.shape == (1, 3, 4, 4) and small_masks.dtype == torch.long
    assert small_masks[0, :2].eq(1).all() and small_masks[0, 2:].eq(4).all()
    assert torch.allclose(small_images[0, 0, 0], torch.full((4,), 0.25))


def _learnable_pairs(size: int, count: int = 8):
    # Each image's left half is bright and labelled front, the right half dark and side.
    images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    images[..., : size // 2] = 220
    masks = torch.full((count, size, size), 4, dtype=torch.uint8)
    masks[..., : size // 2] = 1
    return images.numpy(), masks.numpy()


def test_training_with_coarse_steps_uses_both_sizes(monkeypatch):
    from viewcoop_core.viewparse import train as train_module

    seen = []
    real = train_module.parser_loss

    def recording(logits, target, *options):
        seen.append(logits.shape[-1])
        return real(logits, target, *options)

    monkeypatch.setattr(train_module, "parser_loss", recording)
    spec = ParserSpec(input_size=32, base_channels=4, depth=1)
    settings = TrainSettings(steps=4, batch_size=2, coarse_fraction=0.5, log_every=2)
    fit_parser(*_learnable_pairs(32), spec, settings)
    assert seen == [16, 16, 32, 32]
    # No half size the U-Net takes (16 is not a multiple of 2 * 2**4): every step full.
    seen.clear()
    fit_parser(*_learnable_pairs(32), ParserSpec(input_size=32, base_channels=4, depth=4), settings)
    assert seen == [32, 32, 32, 32]


def test_coarse_fraction_and_loss_are_checked():
    with pytest.raises(ValueError, match="coarse_fraction"):
        TrainSettings(coarse_fraction=1.0)
    with pytest.raises(ValueError, match="loss"):
        TrainSettings(loss="dice")
    with pytest.raises(ValueError, match="boundary_weight"):
        TrainSettings(boundary_weight=-1.0)
