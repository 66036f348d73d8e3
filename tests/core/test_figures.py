"""Fig. 4/5/6 numbers against brute-force references, the plots, and make_figures end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from viewcoop_core import figures
from viewcoop_core.vocabulary import MASK_VALUE

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# CLIP's text tower in ViewCoOpModel's state dict, spelled out independently of the code.
CLIP_TEXT_TOWER = (
    "clip.transformer.",
    "clip.ln_final.",
    "clip.positional_embedding",
    "clip.text_projection",
)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.width > 100 and image.height > 100


# -- Fig. 4 -----------------------------------------------------------------------------


def loop_pairs(ids):
    positive, negative = set(), set()
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            (positive if ids[i] == ids[j] else negative).add((i, j))
    return positive, negative


def test_pair_indices_match_brute_force_enumeration():
    ids = [3, 1, 3, 2, 1, 3, 7, 2, 1, 1]
    positive, negative = figures.sample_pair_indices(ids, seed=4)
    loop_positive, loop_negative = loop_pairs(ids)
    assert {tuple(p) for p in positive.tolist()} == loop_positive
    assert len(positive) == len(loop_positive)
    negative_set = {tuple(p) for p in negative.tolist()}
    assert len(negative_set) == len(negative) == len(loop_positive)  # equal size, no duplicates
    assert negative_set <= loop_negative


def test_pair_indices_subset_and_caps():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, size=300)
    positive, negative = figures.sample_pair_indices(ids, max_samples=50, max_pairs=40, seed=1)
    used = np.unique(np.concatenate([positive.ravel(), negative.ravel()]))
    assert len(used) <= 50
    assert len(positive) == len(negative) == 40
    assert np.all(positive[:, 0] < positive[:, 1]) and np.all(negative[:, 0] < negative[:, 1])
    assert np.all(ids[positive[:, 0]] == ids[positive[:, 1]])
    assert np.all(ids[negative[:, 0]] != ids[negative[:, 1]])
    assert len({tuple(p) for p in negative.tolist()}) == 40


def test_negatives_are_capped_by_what_exists():
    # 5 of one id, 1 of another: 10 positives but only 5 different-id pairs.
    positive, negative = figures.sample_pair_indices([0, 0, 0, 0, 0, 1])
    assert len(positive) == 10
    assert {tuple(p) for p in negative.tolist()} == {(i, 5) for i in range(5)}


def test_pair_indices_without_repeated_id_is_an_error():
    with pytest.raises(ValueError, match="no positive pair"):
        figures.sample_pair_indices([0, 1, 2, 3])


def test_pair_distances_equal_loop_of_cosines():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 5, generator=generator)
    ids = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
    pos, neg = figures.pair_distance_samples(features, ids, seed=2)
    positive_pairs, negative_pairs = figures.sample_pair_indices(ids, seed=2)

    def cos_distance(a, b):
        fa, fb = features[a].double(), features[b].double()
        return 1.0 - float(fa @ fb / (fa.norm() * fb.norm()))

    np.testing.assert_allclose(pos, [cos_distance(a, b) for a, b in positive_pairs], atol=1e-5)
    np.testing.assert_allclose(neg, [cos_distance(a, b) for a, b in negative_pairs], atol=1e-5)


def test_distance_separation_auc_extremes_and_sklearn():
    rng = np.random.default_rng(0)
    separated = figures.distance_separation(rng.uniform(0.0, 0.4, 500), rng.uniform(0.6, 1.0, 700))
    assert separated["auc"] == 1.0 and separated["overlap"] == 0.0
    same = figures.distance_separation(rng.normal(0.5, 0.1, 4000), rng.normal(0.5, 0.1, 4000))
    assert abs(same["auc"] - 0.5) < 0.03 and same["overlap"] > 0.85

    pos, neg = (
        np.round(rng.normal(0.4, 0.2, 300), 2),
        np.round(rng.normal(0.6, 0.2, 400), 2),
    )  # with ties
    stats = figures.distance_separation(pos, neg)
    labels = np.r_[np.zeros(len(pos)), np.ones(len(neg))]
    assert stats["auc"] == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)
    assert stats["pos_mean"] == pytest.approx(pos.mean()) and stats["neg_std"] == pytest.approx(
        neg.std()
    )


# -- Fig. 5 -----------------------------------------------------------------------------


def naive_mmd(x: np.ndarray, y: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    pooled = np.concatenate([x, y])
    distances = [
        np.linalg.norm(pooled[i] - pooled[j])
        for i in range(len(pooled))
        for j in range(i + 1, len(pooled))
    ]
    sigma = float(np.median(distances))

    def k(a, b):
        return math.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    xx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    yy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    xy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return math.sqrt(max(xx + yy - 2 * xy, 0.0))


def test_mmd_equals_double_loop():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 4)), rng.normal(0.5, 1.0, size=(7, 4))
    assert figures.image_text_mmd(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        naive_mmd(x, y), rel=1e-9
    )


def test_mmd_small_for_one_distribution_and_large_for_shifted():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 16, generator=generator), torch.randn(800, 16, generator=generator)
    shifted = torch.randn(800, 16, generator=generator) + 1.0
    same = figures.image_text_mmd(a, b)
    different = figures.image_text_mmd(a, shifted)
    assert same < 0.08
    assert different > 0.4 and different > 5 * same
    assert figures.image_text_mmd(a, a) == pytest.approx(0.0, abs=1e-6)


def test_image_text_discrepancy_pearson_and_pair_distances():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(50, 8, generator=generator)
    text = image + 0.3 * torch.randn(50, 8, generator=generator)
    result = figures.image_text_discrepancy(image, text, max_points=100)
    x = torch.nn.functional.normalize(image.double(), dim=-1).numpy()
    y = torch.nn.functional.normalize(text.double(), dim=-1).numpy()
    assert result["pearson"] == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], abs=1e-9)
    np.testing.assert_allclose(result["pair_distance"], 1.0 - (x * y).sum(axis=1), atol=1e-6)
    assert len(result["image_values"]) == len(result["text_values"]) == 100
    # Every scatter point is a matched coordinate: (x[n, d], y[n, d]) for one (n, d).
    matched = {(round(a, 5), round(b, 5)) for a, b in zip(x.ravel(), y.ravel())}
    assert all(
        (round(float(a), 5), round(float(b), 5)) in matched
        for a, b in zip(result["image_values"], result["text_values"])
    )


# -- Fig. 6 -----------------------------------------------------------------------------


def test_patch_global_correlation_equals_loop():
    generator = torch.Generator().manual_seed(0)
    patches, global_features = (
        torch.randn(2, 6, 5, generator=generator),
        torch.randn(2, 5, generator=generator),
    )
    heat = figures.patch_global_correlation(patches, global_features, grid=(2, 3))
    assert heat.shape == (2, 2, 3)
    for b in range(2):
        for p in range(6):
            expected = torch.dot(patches[b, p], global_features[b]) / (
                patches[b, p].norm() * global_features[b].norm()
            )
            assert float(heat[b, p // 3, p % 3]) == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="square grid"):
        figures.patch_global_correlation(patches, global_features)


def test_patch_view_labels_majority_per_patch():
    mask = np.zeros((1, 4, 4), dtype=np.uint8)
    mask[0, :2, :2] = [[1, 1], [2, 0]]  # front majority
    mask[0, :2, 2:] = [[4, 4], [3, 3]]  # tie side/top -> smaller label (top=3)
    mask[0, 2:, 2:] = 2
    labels = figures.patch_view_labels(mask, (2, 2))
    assert labels.tolist() == [[[1, 3], [0, 2]]]


def toy_masks(count: int, size: int) -> np.ndarray:
    masks = np.zeros((count, size, size), dtype=np.uint8)
    quarter = size // 4
    for b in range(count):
        masks[b, quarter:-quarter, quarter : 2 * quarter] = MASK_VALUE["front"]
        masks[b, quarter:-quarter, 2 * quarter : -quarter] = MASK_VALUE["side"]
        masks[b, quarter : quarter + 3, quarter:-quarter] = MASK_VALUE["top"]
        masks[b, -quarter - 3 : -quarter, quarter:-quarter] = MASK_VALUE["back"] if b % 2 else 0
    return masks


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    curves = {
        "before": (rng.normal(0.5, 0.1, 300), rng.normal(0.6, 0.1, 300)),
        "after": (rng.normal(0.2, 0.05, 300), rng.normal(0.7, 0.1, 300)),
    }
    assert_png(figures.plot_distance_distributions(curves, tmp_path / "a" / "fig4.png"))

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(40, 8, generator=generator)
    results = {
        "text encoder frozen": figures.image_text_discrepancy(
            image, torch.randn(40, 8, generator=generator)
        ),
        "text encoder trained": figures.image_text_discrepancy(
            image, image + 0.2 * torch.randn(40, 8, generator=generator)
        ),
    }
    assert_png(figures.plot_image_text_discrepancy(results, tmp_path / "fig5.png"))

    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    heatmaps = {
        "initial": torch.rand(3, 4, 4, generator=generator),
        "trained": torch.rand(3, 4, 4, generator=generator),
    }
    assert_png(
        figures.plot_patch_correlation(images, heatmaps, toy_masks(3, 32), tmp_path / "fig6.png")
    )
    assert_png(
        figures.plot_patch_correlation(
            images, heatmaps["trained"], None, tmp_path / "fig6_nomask.png"
        )
    )


def test_denormalise_inverts_normalisation():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    tensor = (
        torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    np.testing.assert_array_equal(figures.denormalise_images(tensor, mean, std), pixels)


# -- make_figures end to end ------------------------------------------------------------


def write_tiny_checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module, dict]:
    """A checkpoint in workers.train_loop.save_checkpoint's format for the smoke config on
    a tiny synthetic set, with weights moved away from the initial ones.

    Returns the checkpoint folder, the "trained" model and the initial state dict (built
    as train_loop's rank 0 does: seed_everything(train.seed), then build_components)."""
    from orchestrator.config import load_config
    from viewcoop_core.engine.checkpoint import rng_state, save_checkpoint, seed_everything
    from viewcoop_core.engine.components import build_components
    from viewcoop_core.engine.train import build_optimizer
    from viewcoop_core.synthetic import SyntheticSpec, make_synthetic

    root = tmp_path / "synthetic"
    make_synthetic(root, SyntheticSpec(num_ids=8, num_cameras=4, image_size=64))
    cfg = load_config(REPO / "experiments" / "smoke.yaml", overrides=[f"data.root={root}"])
    seed_everything(cfg.train.seed)
    comps = build_components(cfg, torch.device("cpu"), for_training=False)
    model = comps.model
    initial_state = {key: value.clone() for key, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.optim.step_size, cfg.optim.gamma)
    y_img = np.array([s.pid % 3 for s in comps.dataset.train], dtype=np.int64)
    y_img[0] = -1  # an outlier, as clustering produces
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    save_checkpoint(
        directory,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        epoch=2,
        config=cfg.to_dict(),
        rng=rng_state(),
        mlflow_run_id=None,
        y_img=y_img,
    )
    return directory, model, initial_state


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module, dict]:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_run"))


def test_text_tower_reverted_swaps_only_the_text_tower(tiny_checkpoint):
    from viewcoop_core.figures.runs import load_run, text_tower_reverted

    directory, trained, initial_state = tiny_checkpoint
    run = load_run("trained", directory, torch.device("cpu"))
    # The checkpoint round-trips.
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(run.comps.model.state_dict()[key], value)
    initial, loaded = run.initial.state_dict(), run.comps.model.state_dict()
    # The rebuilt initial weights are the ones training started from.
    assert initial.keys() == initial_state.keys()
    for key, value in initial_state.items():
        torch.testing.assert_close(initial[key], value, msg=key)
    reverted = text_tower_reverted(run.comps.model, run.initial).state_dict()
    text_keys = [k for k in reverted if k.startswith(CLIP_TEXT_TOWER)]
    assert text_keys and any(k.startswith("clip.visual.") for k in reverted)
    for key, value in reverted.items():
        expected = initial[key] if key in text_keys else loaded[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert not torch.equal(
        initial["clip.transformer.resblocks.0.attn.in_proj_weight"],
        loaded["clip.transformer.resblocks.0.attn.in_proj_weight"],
    )
    assert not torch.equal(initial["prompt_learner.ctx"], reverted["prompt_learner.ctx"])


def test_make_figures_end_to_end(tiny_checkpoint, tmp_path):
    from viewcoop_core.figures.runs import FIGURE_FILES, make_figures

    directory, _, _ = tiny_checkpoint
    paths = make_figures(
        directory, tmp_path / "figures", num_images=4, max_samples=64, device="cpu"
    )
    assert set(paths) == set(FIGURE_FILES)
    for key in ("distance_distributions", "image_text_discrepancy", "patch_correlation"):
        assert_png(paths[key])
    summary = json.loads(paths["summary"].read_text())
    metrics = summary["metrics"]
    assert set(summary["fig4_distance_separation"]) == {"initial weights", "trained"}
    for name in (
        "fig4_auc_initial_weights",
        "fig4_auc_trained",
        "fig5_mmd_text_trained",
        "fig5_mmd_text_not_trained",
    ):
        assert math.isfinite(metrics[name])
    assert 0.0 <= metrics["fig4_auc_trained"] <= 1.0
    # Reverting the text tower changes the text features, hence the discrepancy.
    assert metrics["fig5_mmd_text_trained"] != pytest.approx(metrics["fig5_mmd_text_not_trained"])

    again = make_figures(
        [("run a", directory), ("run b", directory)],
        tmp_path / "two",
        num_images=2,
        max_samples=64,
        device="cpu",
    )
    stats = json.loads(again["summary"].read_text())["fig4_distance_separation"]
    assert list(stats) == ["initial weights", "run a", "run b"]
    assert stats["run a"] == stats["run b"]  # same weights, same pairs
