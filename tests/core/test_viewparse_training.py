"""The parser's training: its loss against a naive per-pixel loop, the loss option's
checks, and the half-resolution steps of progressive resizing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from viewcoop_core.viewparse.losses import PARSER_LOSSES, parser_loss, soft_dice_loss
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

    def recording(logits, target, kind, dice_weight):
        seen.append(logits.shape[-1])
        return real(logits, target, kind, dice_weight)

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
