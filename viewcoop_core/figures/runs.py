"""The paper's qualitative figures (Fig. 4, 5, 6) for training checkpoints.

``make_figures`` rebuilds each checkpoint's model the way ``viewcoop evaluate`` does
(``engine.components.build_components`` + ``engine.checkpoint.restore_model``), plus the same architecture at its initial weights (what the run started from:
the same seed, so the same random init or the same pretrained CLIP), and writes:

* ``fig4_distance_distributions.png``: positive/negative pair distances on the test
  gallery, one panel for the initial weights and one per checkpoint. The paper
  compares four trained runs (Baseline / ViewCoOp / CMG / Ours); with one checkpoint
  this is "before vs after", and a sweep can pass several ``(label, checkpoint)``.
* ``fig5_image_text_discrepancy.png``: MMD and matched-coordinate scatter of image vs
  prompt features on training images, text encoder trained vs not trained (of the last
  checkpoint; see ``text_tower_reverted``).
* ``fig6_patch_correlation.png``: patch-to-global cosine maps of query images, initial
  weights vs each checkpoint, with their view masks when the dataset has them.
* ``figures.json``: the scalars (separation AUC per panel, MMD per setting) and a flat
  ``metrics`` dict ready for MLflow.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from viewcoop_core.config import ExperimentConfig, apply_overrides
from viewcoop_core.data.image_dataset import ImageDataset
from viewcoop_core.data.masks import load_mask
from viewcoop_core.data.types import ReidDataset, ReidSample
from viewcoop_core.engine.batches import evaluation_loaders, extraction_batches
from viewcoop_core.engine.checkpoint import (
    read_checkpoint,
    restore_model,
    rng_state,
    seed_everything,
    set_rng_state,
)
from viewcoop_core.engine.components import Components, build_components
from viewcoop_core.engine.extract import PromptInputs, extract_features, image_features
from viewcoop_core.engine.train import epoch_clause_order
from viewcoop_core.figures.correlation import (
    denormalise_images,
    patch_global_correlation,
    plot_patch_correlation,
)
from viewcoop_core.figures.discrepancy import (
    image_text_discrepancy,
    median_heuristic_bandwidth,
    plot_image_text_discrepancy,
)
from viewcoop_core.figures.distances import (
    distance_separation,
    pair_distance_samples,
    plot_distance_distributions,
)
from viewcoop_core.models.clip import encode_image
from viewcoop_core.models.model import ViewCoOpModel
from viewcoop_core.outputs import claim_output_dir
from viewcoop_core.views import resize_mask

logger = logging.getLogger(__name__)

INITIAL_LABEL = "initial weights"
TEXT_TRAINED_LABEL = "text encoder trained"
TEXT_FROZEN_LABEL = "text encoder not trained"
FIGURE_FILES = {
    "distance_distributions": "fig4_distance_distributions.png",
    "image_text_discrepancy": "fig5_image_text_discrepancy.png",
    "patch_correlation": "fig6_patch_correlation.png",
    "summary": "figures.json",
}
# The CLIP text tower inside ViewCoOpModel's state dict; ``clip.transformer.`` is the text
# transformer (the vision one lives under ``clip.visual.``). The prompt learner is not in it.
TEXT_TOWER_PREFIXES = (
    "clip.transformer.",
    "clip.ln_final.",
    "clip.positional_embedding",
    "clip.text_projection",
)

CheckpointArg = str | Path | Sequence[tuple[str, str | Path]]


@dataclass
class LoadedRun:
    """A checkpoint turned back into a model, next to the run's initial weights."""

    label: str
    cfg: ExperimentConfig
    state: dict[str, Any]
    comps: Components  # comps.model holds the checkpoint's weights
    initial: ViewCoOpModel | None  # the same architecture at the run's initial weights


def make_figures(
    checkpoint: CheckpointArg,
    out_dir: str | Path,
    num_images: int = 6,
    max_samples: int = 5000,
    device: str | None = None,
    overrides: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write Fig. 4, 5 and 6 and their scalars for one checkpoint or several.

    Args:
        checkpoint: a checkpoint folder (or its ``state.pt``), or a list of
            ``(label, checkpoint)`` for a comparison across runs. The initial-weights
            panel and the image set come from the first entry; Fig. 5 uses the last.
        out_dir: folder for the PNGs and ``figures.json``.
        num_images: query images shown in Fig. 6.
        max_samples: random images for Fig. 4 (gallery) and Fig. 5 (train), 5000 in the paper.
        device: torch device; default CUDA when available.
        overrides: dotted ``key=value`` config overrides applied to every checkpoint's
            config (e.g. ``data.root=/new/place`` when the data moved).
        seed: seeds the image subsets and pair draws.

    Returns:
        ``FIGURE_FILES`` keys -> written paths (``patch_correlation`` is absent when the
        dataset has no query images).
    """
    entries = _checkpoint_entries(checkpoint)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    claim_output_dir(out, "figures", purpose="figures")
    last_index = len(entries) - 1
    runs = [
        load_run(
            label,
            path,
            torch_device,
            overrides,
            for_training=i == last_index,
            with_initial=i in (0, last_index),
        )
        for i, (label, path) in enumerate(entries)
    ]
    first, last = runs[0], runs[-1]
    models = {
        INITIAL_LABEL: (first.initial, first),
        **{run.label: (run.comps.model, run) for run in runs},
    }

    paths: dict[str, Path] = {}
    separation, paths["distance_distributions"] = distance_figure(
        models, first, torch_device, max_samples, seed, out / FIGURE_FILES["distance_distributions"]
    )
    discrepancy, paths["image_text_discrepancy"] = discrepancy_figure(
        last, torch_device, max_samples, seed, out / FIGURE_FILES["image_text_discrepancy"]
    )
    query = first.comps.dataset.query or first.comps.dataset.test
    if query and num_images > 0:
        paths["patch_correlation"] = correlation_figure(
            models,
            first,
            query,
            num_images,
            torch_device,
            seed,
            out / FIGURE_FILES["patch_correlation"],
        )
    else:
        logger.warning("no query images in %s: Fig. 6 is skipped", first.cfg.data.dataset)
    summary = figure_summary(separation, discrepancy, runs)
    paths["summary"] = out / FIGURE_FILES["summary"]
    paths["summary"].write_text(json.dumps(summary, indent=2))
    logger.info("figures in %s: %s", out, summary["metrics"])
    return paths


def _checkpoint_entries(checkpoint: CheckpointArg) -> list[tuple[str, Path]]:
    if isinstance(checkpoint, (str, Path)):
        return [("trained", Path(checkpoint))]
    entries = [(str(label), Path(path)) for label, path in checkpoint]
    if not entries:
        raise ValueError(
            "checkpoint list is empty: pass a checkpoint folder or [(label, folder), ...]"
        )
    labels = [label for label, _ in entries]
    if len(set(labels)) != len(labels) or INITIAL_LABEL in labels:
        raise ValueError(
            f"checkpoint labels must be distinct and not {INITIAL_LABEL!r}, got {labels}"
        )
    return entries


def load_run(
    label: str,
    checkpoint: str | Path,
    device: torch.device,
    overrides: list[str] | None = None,
    for_training: bool = False,
    with_initial: bool = True,
) -> LoadedRun:
    """Rebuild a checkpoint's model (as ``orchestrator.evaluate``) and its initial weights.

    ``for_training`` also computes the training images' view proportions (the prompts
    of Fig. 5 need them); ``with_initial`` keeps a copy at the initial weights (one
    more model in memory). The model is built under the run's seed (``train.seed``:
    what rank 0 seeds before building, and DDP broadcasts rank 0's weights), so before
    the checkpoint is loaded it holds exactly the weights training started from. The
    caller's RNG state is restored afterwards.
    """
    state = read_checkpoint(checkpoint)
    cfg = ExperimentConfig.from_dict(apply_overrides(state["config"], overrides or []))
    saved_rng = rng_state()
    try:
        seed_everything(cfg.train.seed)
        comps = build_components(cfg, device, for_training=for_training)
    finally:
        set_rng_state(saved_rng)
    initial = copy.deepcopy(comps.model).eval() if with_initial else None
    restore_model(comps.model, state)
    comps.model.eval()
    logger.info("loaded %r: epoch %s of %s", label, state.get("epoch"), checkpoint)
    return LoadedRun(label=label, cfg=cfg, state=state, comps=comps, initial=initial)


def text_tower_reverted(model: ViewCoOpModel, reference: ViewCoOpModel) -> ViewCoOpModel:
    """A copy of ``model`` whose CLIP text tower (transformer, ln_final, positional
    embedding, text projection) holds ``reference``'s weights.

    With ``reference`` at the initial weights this approximates the paper's "text encoder
    not activated" setting from a single run: image encoder and prompt learner stay as
    trained, only the text encoder goes back to where it started. A run trained with a
    frozen text encoder would also have adapted its image encoder and prompts to that
    frozen tower, so this isolates what training the text tower changed rather than
    reproducing a second training run.
    """
    reverted = copy.deepcopy(model)
    reference_state = reference.state_dict()
    text_state = {k: v for k, v in reference_state.items() if k.startswith(TEXT_TOWER_PREFIXES)}
    if not text_state:
        raise ValueError(f"no text-tower weights ({TEXT_TOWER_PREFIXES}) in the reference model")
    result = reverted.load_state_dict(text_state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"text-tower keys the model lacks: {result.unexpected_keys[:8]}")
    return reverted


def _subset(count: int, limit: int, seed: int) -> np.ndarray:
    """Sorted random indices of at most ``limit`` out of ``count`` items."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _image_features(
    model: ViewCoOpModel, run: LoadedRun, samples: Sequence[ReidSample], device: torch.device
) -> torch.Tensor:
    """float32 [n, D] normalised image features of ``samples`` in order (``run``'s
    test transform, i.e. the model's own input size)."""
    cfg = run.cfg
    batch_size = cfg.train.extract_batch_size
    cached = evaluation_loaders(run.comps, batch_size)  # decoded once for every model
    features = image_features(
        model,
        samples,
        run.comps.test_transform,
        device,
        batch_size,
        cfg.data.num_workers,
        cfg.train.amp,
        loader=None if cached is None else cached(samples),
    )
    return features.cpu()


def _evaluation_samples(dataset: ReidDataset) -> list[ReidSample]:
    """The images Fig. 4 draws pairs from: the gallery (VeRi protocol) or the test list."""
    return list(dataset.gallery) if dataset.protocol != "vehicleid" else list(dataset.test)


def distance_figure(
    models: dict[str, tuple[ViewCoOpModel, LoadedRun]],
    run: LoadedRun,
    device: torch.device,
    max_samples: int,
    seed: int,
    path: Path,
) -> tuple[dict[str, dict[str, float]], Path]:
    """Fig. 4 over ``run``'s evaluation images for every (model, its run); returns
    per-label ``distance_separation`` and the PNG."""
    samples = _evaluation_samples(run.comps.dataset)
    chosen = [samples[i] for i in _subset(len(samples), max_samples, seed)]
    ids = [s.pid for s in chosen]
    curves = {}
    for label, (model, owner) in models.items():
        features = _image_features(model, owner, chosen, device)
        curves[label] = pair_distance_samples(features, ids, max_samples=max_samples, seed=seed)
    separation = {label: distance_separation(*curve) for label, curve in curves.items()}
    return separation, plot_distance_distributions(curves, path)


def _train_pair_features(
    model: ViewCoOpModel, run: LoadedRun, indices: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and prompt text features [n, D] of training images ``indices``, with the
    prompts of the checkpoint's last epoch: its view proportions, its pseudo-labels and
    that epoch's clause order."""
    cfg, comps, state = run.cfg, run.comps, run.state
    train = comps.dataset.train
    y_img = state.get("y_img")
    cluster_ids = None
    if y_img is not None:
        cluster_ids = torch.as_tensor(np.asarray(y_img), dtype=torch.long)
        if len(cluster_ids) != len(train):
            raise ValueError(
                f"the checkpoint's y_img has {len(cluster_ids)} labels but {cfg.data.dataset} at "
                f"{cfg.data.root} has {len(train)} training images; point data.root at the run's data"
            )
    order = epoch_clause_order(
        len(train), int(state.get("epoch", 1)), cfg.train.seed, cfg.prompt.shuffle_clauses
    )
    loader = extraction_batches(comps, cfg.train.extract_batch_size, cfg.data.num_workers, indices)
    prompts = PromptInputs(comps.view_percent, cluster_ids, order)
    _, img, txt = extract_features(model, loader, device, prompts, amp=cfg.train.amp)
    return torch.from_numpy(img), torch.from_numpy(txt)


def discrepancy_figure(
    run: LoadedRun, device: torch.device, max_samples: int, seed: int, path: Path
) -> tuple[dict[str, dict[str, float]], Path]:
    """Fig. 5 on ``run``'s training images: text encoder trained vs reverted to its
    initial weights (``text_tower_reverted``). One kernel bandwidth (median heuristic
    on the trained setting) serves both, so the two MMDs are on one scale."""
    indices = _subset(len(run.comps.dataset.train), max_samples, seed)
    settings = {
        TEXT_FROZEN_LABEL: text_tower_reverted(run.comps.model, run.initial),
        TEXT_TRAINED_LABEL: run.comps.model,
    }
    pairs = {
        label: _train_pair_features(model, run, indices, device)
        for label, model in settings.items()
    }
    bandwidth = median_heuristic_bandwidth(torch.cat(pairs[TEXT_TRAINED_LABEL]), seed=seed)
    results = {
        label: image_text_discrepancy(
            img, txt, max_samples=max_samples, bandwidth=bandwidth, seed=seed
        )
        for label, (img, txt) in pairs.items()
    }
    scalars = {
        label: {key: float(result[key]) for key in ("mmd", "pearson", "pair_distance_mean")}
        | {"bandwidth": bandwidth}
        for label, result in results.items()
    }
    return scalars, plot_image_text_discrepancy(results, path)


def _input_batch(run: LoadedRun, samples: Sequence[ReidSample]) -> torch.Tensor:
    """float32 [B, 3, H, W] network inputs of ``samples`` under ``run``'s test transform."""
    dataset = ImageDataset(samples, run.comps.test_transform)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def correlation_figure(
    models: dict[str, tuple[ViewCoOpModel, LoadedRun]],
    run: LoadedRun,
    query: Sequence[ReidSample],
    num_images: int,
    device: torch.device,
    seed: int,
    path: Path,
) -> Path:
    """Fig. 6 on ``num_images`` random query images (those with view masks when any
    have one) shown as ``run`` sees them: one heatmap row per model, then the view and
    patch-level masks on ``run``'s patch grid."""
    with_masks = [s for s in query if s.mask_path is not None]
    pool = with_masks or list(query)
    chosen = [pool[i] for i in _subset(len(pool), num_images, seed)]
    bundle = run.comps.bundle
    images = denormalise_images(_input_batch(run, chosen), bundle.mean, bundle.std)
    heatmaps = {
        label: patch_heatmaps(model, _input_batch(owner, chosen), device)
        for label, (model, owner) in models.items()
    }
    masks = None
    if with_masks:
        size = (bundle.image_size, bundle.image_size)
        masks = np.stack([resize_mask(load_mask(s.mask_path), size) for s in chosen])
    return plot_patch_correlation(images, heatmaps, masks, path)


@torch.no_grad()
def patch_heatmaps(
    model: ViewCoOpModel, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """float32 [B, h, w] patch-to-global cosines of normalised network inputs [B, 3, H, W]."""
    grid = tuple(int(v) for v in model.clip.visual.grid_size)
    global_features, patch_tokens = encode_image(model.clip, images.to(device))
    return patch_global_correlation(patch_tokens, global_features, grid).cpu()


def _metric_name(label: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower()


def figure_summary(
    separation: dict[str, dict[str, float]],
    discrepancy: dict[str, dict[str, float]],
    runs: Sequence[LoadedRun],
) -> dict[str, Any]:
    """The JSON written next to the figures, with a flat ``metrics`` dict for MLflow."""
    metrics = {
        f"fig4_auc_{_metric_name(label)}": stats["auc"] for label, stats in separation.items()
    }
    metrics |= {
        f"fig4_overlap_{_metric_name(label)}": stats["overlap"]
        for label, stats in separation.items()
    }
    metrics["fig5_mmd_text_trained"] = discrepancy[TEXT_TRAINED_LABEL]["mmd"]
    metrics["fig5_mmd_text_not_trained"] = discrepancy[TEXT_FROZEN_LABEL]["mmd"]
    return {
        "checkpoints": {
            run.label: {"epoch": run.state.get("epoch"), "name": run.cfg.name} for run in runs
        },
        "fig4_distance_separation": separation,
        "fig5_image_text_discrepancy": {"checkpoint": runs[-1].label, **discrepancy},
        "metrics": metrics,
    }
