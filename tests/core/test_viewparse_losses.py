"""The parser's loss against a naive per-pixel loop, and the loss option's checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from viewcoop_core.viewparse.losses import PARSER_LOSSES, parser_loss, soft_dice_loss


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
