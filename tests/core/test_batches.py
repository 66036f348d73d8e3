"""Where batches come from (``engine.batches``): the decoded-image caches of
``train.device_cache`` give the same evaluation batches, features and mAP as the files,
and training batches that restart on every iteration; the local loop trains either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import load_config
from viewcoop_core.engine.batches import extraction_batches, training_batches
from viewcoop_core.engine.components import build_components
from viewcoop_core.engine.device_cache import random_crop
from viewcoop_core.engine.evaluate import evaluation_row
from viewcoop_core.engine.extract import PromptInputs, extract_features
from viewcoop_core.engine.local_loop import train_locally
from viewcoop_core.engine.train import extraction_clause_order

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def smoke(root: Path, *overrides: str):
    from orchestrator.train import absolute_paths, ensure_dataset

    cfg = absolute_paths(
        load_config(REPO / "experiments" / "smoke.yaml", [f"data.root={root}", *overrides])
    )
    ensure_dataset(cfg)
    return cfg


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """Components of the smoke config read from the files and from the caches."""
    root = tmp_path_factory.mktemp("batches") / "data"
    torch.manual_seed(0)
    files = build_components(smoke(root), CPU)
    cached_cfg = smoke(root, "train.device_cache=true")
    torch.manual_seed(0)
    cached = build_components(cached_cfg, CPU)
    cached.model.load_state_dict(files.model.state_dict())
    return cached_cfg, files, cached


def test_only_the_switch_builds_caches(both):
    _, files, cached = both
    assert files.caches is None and cached.caches is not None


def test_cached_extraction_of_a_shard_equals_the_files(both):
    cfg, files, cached = both
    n = len(files.dataset.train)
    shard = np.arange(1, n, 2)
    prompts = PromptInputs(
        files.view_percent, None, extraction_clause_order(cfg.prompt, n, 1, cfg.train.seed)
    )
    expected = extract_features(
        files.model, extraction_batches(files, 16, 0, shard), CPU, prompts, amp=False
    )
    got = extract_features(
        cached.model, extraction_batches(cached, 16, 0, shard), CPU, prompts, amp=False
    )
    assert np.array_equal(expected[0], got[0]) and np.array_equal(got[0], shard)
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[2], expected[2], rtol=0, atol=1e-5)


def test_cached_evaluation_row_equals_the_files(both):
    cfg, files, cached = both
    n = len(files.dataset.train)
    prompts = PromptInputs(
        files.view_percent, None, extraction_clause_order(cfg.prompt, n, 0, cfg.train.seed)
    )
    expected = evaluation_row(cfg, files, CPU, prompts, diagnostics=True)
    got = evaluation_row(cfg, cached, CPU, prompts, diagnostics=True)
    for key in ("mAP", "R1", "R5", "knn_prec_img", "knn_prec_txt"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert cached.caches._test is not None  # the test set was decoded for it


def test_cached_training_batches_restart_and_keep_pk_groups(both):
    cfg, _, cached = both
    labels = np.array([s.pid for s in cached.dataset.train])
    batches = training_batches(cached, labels, 8, cfg.train, seed=3, epoch=2, num_workers=0)
    first, again = list(batches), list(batches)
    assert len(first) == cfg.train.iters
    for a, b in zip(first, again):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
        groups = labels[a["index"].numpy()].reshape(-1, cfg.train.num_instances)
        assert (groups == groups[:, :1]).all()
        assert a["image"].shape == (8, 3, cfg.model.image_size, cfg.model.image_size)


def test_random_crop_applies_with_its_probability():
    images = torch.randint(1, 256, (400, 3, 12, 10), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(images, 3, generator, p=0.0), images)
    unchanged = (random_crop(images, 3, generator, p=0.5) == images).flatten(1).all(1)
    # A crop leaves an image unchanged only at offset (pad, pad): 1/49 of crops.
    assert 0.4 < unchanged.float().mean() < 0.65


def test_the_local_loop_trains_from_the_caches(tmp_path):
    cfg = smoke(tmp_path / "data", "train.device_cache=true", "train.epochs=1")
    rows = train_locally(cfg)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(0 <= row["mAP"] <= 1 for row in rows)
    assert rows[1]["skipped_training"] == 0.0 and np.isfinite(rows[1]["loss"])
