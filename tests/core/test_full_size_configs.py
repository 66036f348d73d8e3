"""The paper's configurations, exercised on the CPU before any GPU sees them.

``experiments/veri776_vitb16.yaml`` and ``experiments/vehicleid_vitb16.yaml`` run as
written (ViT-B-16-quickgelu at 256, the real tokenizer and prompt lengths, the full
method, patch-16 view ratios, tau 1or2, fused-Adam selection, bf16 autocast on) through
the Ray-free engine the workers run: extract -> one clustering -> two training
iterations -> evaluation, on a small folder in each dataset's layout.

What is overridden, and why: the data location (a temporary folder), ``num_workers``
(no loader processes for 16 images), random init (no downloads), one epoch of two
iterations, and the batch (8 = P 2 x K 4 instead of 64: one ViT-B/16 forward and
backward at 256 costs seconds per image on 2 CPU cores; the P x K code path is the
same). bf16 autocast, which the engine only turns on for CUDA, is run here on the CPU
for one extraction batch of two images in the VeRi test (image and prompt-text encoders;
CPU bf16 without hardware support is ~5x slower forward and ~20x backward, so training
stays in float32).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import load_config
from viewcoop_core.engine import extract as extract_module
from viewcoop_core.engine import train as train_module
from viewcoop_core.engine.clustering_step import ClusteringStep
from viewcoop_core.engine.components import build_components, build_loss
from viewcoop_core.engine.evaluate import evaluate
from viewcoop_core.engine.extract import PromptInputs, extract_features, make_loader
from viewcoop_core.engine.train import (
    EpochLabels,
    TrainState,
    build_optimizer,
    epoch_clause_order,
    pk_loader,
    train_epoch,
)
from viewcoop_core.losses import cluster_centroids
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
SPEC = SyntheticSpec(num_ids=8, num_cameras=2, images_per_camera=2, image_size=256, seed=11)


def overrides(root: Path, masks: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"data.masks_dir={masks}",
        "data.num_workers=0",
        "model.pretrained=null",
        "train.epochs=1",
        "train.iters=2",
        "train.batch_size=8",
        "train.extract_batch_size=8",
    ]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic-256")
    make_synthetic(root, SPEC)
    return root


def vehicleid_folder(synthetic: Path, root: Path) -> Path:
    """VehicleID's layout (image/, train_test_split/, masks) from a synthetic set."""
    (root / "image").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "train_test_split").mkdir()
    lists: dict[str, list[str]] = {"train_list.txt": [], "test_list_2400.txt": []}
    number = 0
    for folder, list_name in (
        ("image_train", "train_list.txt"),
        ("image_query", "test_list_2400.txt"),
        ("image_test", "test_list_2400.txt"),
    ):
        for path in sorted((synthetic / folder).glob("*.jpg")):
            number += 1
            name = f"{number:07d}"
            shutil.copy(path, root / "image" / f"{name}.jpg")
            shutil.copy(synthetic / "masks" / f"{path.stem}.png", root / "masks" / f"{name}.png")
            lists[list_name].append(f"{name} {int(path.name.split('_')[0])}")
    for list_name, lines in lists.items():
        (root / "train_test_split" / list_name).write_text("\n".join(lines) + "\n")
    return root


@contextlib.contextmanager
def cpu_bf16_autocast(monkeypatch):
    """The engine's autocast, which is bf16 on CUDA only, made bf16 on the CPU too."""

    def autocast(device, enabled):
        if enabled:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    with monkeypatch.context() as patch:
        patch.setattr(extract_module, "autocast", autocast)
        patch.setattr(train_module, "autocast", autocast)
        yield


def run_configuration(config: str, extra: list[str], monkeypatch, bf16_images: int = 0) -> dict:
    cfg = load_config(str(REPO / config), extra)
    # As written where it matters on a GPU.
    assert cfg.model.name == "ViT-B-16-quickgelu" and cfg.model.image_size == 256
    assert cfg.prompt.variant == "viewcoop" and cfg.loss.terms == ["v", "t", "g", "cm"]
    assert cfg.train.amp and cfg.cluster.k1 == 30 and cfg.views.patch_size == 16
    comps = build_components(cfg, CPU)
    model, samples = comps.model, comps.dataset.train
    assert comps.bundle.image_size == 256 and comps.bundle.embed_dim == 512
    assert comps.view_percent.shape == (len(samples), 4) and comps.view_percent.sum() > 0
    order = epoch_clause_order(len(samples), 1, cfg.train.seed, cfg.prompt.shuffle_clauses)
    prompts = PromptInputs(comps.view_percent, None, order)
    loader = make_loader(samples, comps.test_transform, cfg.train.extract_batch_size, 0)
    _, img, txt = extract_features(model, loader, CPU, prompts, amp=cfg.train.amp)
    if bf16_images:
        with cpu_bf16_autocast(monkeypatch):
            first = make_loader(samples[:bf16_images], comps.test_transform, bf16_images, 0)
            _, img16, txt16 = extract_features(model, first, CPU, prompts, amp=True)
        # bf16 features of the same images agree with float32 ones to bf16 precision.
        assert np.isfinite(img16).all() and np.isfinite(txt16).all()
        assert (img16 * img[:bf16_images]).sum(1).min() > 0.98
        assert (txt16 * txt[:bf16_images]).sum(1).min() > 0.98
    true_ids = np.array([s.pid for s in samples])
    result = ClusteringStep(cfg.cluster, cfg.graph, true_ids=true_ids, device="cpu").run(
        1, img, txt
    )
    labels, text_labels = result.y_img, result.y_txt
    img_centroids, txt_centroids = result.img_centroids, result.txt_centroids
    needed = cfg.train.batch_size // cfg.train.num_instances
    if result.num_img_clusters < needed:
        # A random-init backbone may not find P clusters among 16 images: the two
        # iterations then train on the known identities (as bench_epoch does).
        labels = text_labels = np.unique(true_ids, return_inverse=True)[1].astype(np.int32)
        as_long = torch.as_tensor(labels).long()
        img_centroids = cluster_centroids(torch.as_tensor(img), as_long)[0].numpy()
        txt_centroids = cluster_centroids(torch.as_tensor(txt), as_long)[0].numpy()
    loss_fn = build_loss(cfg, comps.bundle.embed_dim)
    loss_fn.reset(torch.as_tensor(img_centroids), torch.as_tensor(txt_centroids))
    model.prompt_learner.on_clusters_changed(int(labels.max()) + 1)
    optimizer = build_optimizer(model, cfg.optim, cfg.train, CPU)
    state = TrainState(
        model, loss_fn, optimizer, CPU, tau=tuple(cfg.graph.tau), amp=cfg.train.amp,
        with_text=model.train_text,
    )  # fmt: skip
    train_loader = pk_loader(
        samples, labels, comps.train_transform, cfg.train.batch_size, cfg.train, 0, 1, 0
    )
    before = model.clip.visual.conv1.weight.detach().clone()
    epoch_labels = EpochLabels(torch.as_tensor(labels).long(), torch.as_tensor(text_labels).long())
    stats = train_epoch(state, train_loader, epoch_labels, prompts)
    assert not torch.equal(before, model.clip.visual.conv1.weight)
    assert all(np.isfinite(v) for v in stats.values()), stats
    assert {"loss", "L_v_ce", "L_v_tri", "L_t", "L_g", "L_cm"} <= set(stats)
    metrics = evaluate(
        model, comps.dataset, comps.test_transform, CPU, cfg.train.extract_batch_size, 0,
        cfg.train.amp,
    )  # fmt: skip
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["R1"] <= 1.0
    return {"stats": stats, "metrics": metrics, "clusters": result.num_img_clusters}


def test_veri776_vitb16_as_written_runs_on_cpu(synthetic, monkeypatch):
    # The synthetic set is in VeRi-776's layout (image_train/, image_query/, image_test/,
    # names like 0001_c001_..., exact view masks in masks/).
    extra = overrides(synthetic, synthetic / "masks")
    run_configuration("experiments/veri776_vitb16.yaml", extra, monkeypatch, bf16_images=2)


def test_vehicleid_vitb16_as_written_runs_on_cpu(synthetic, tmp_path, monkeypatch):
    root = vehicleid_folder(synthetic, tmp_path / "VehicleID")
    run_configuration(
        "experiments/vehicleid_vitb16.yaml", overrides(root, root / "masks"), monkeypatch
    )
