"""Training, extraction, evaluation and the mutual dictionary, each next to its peer.

- training: images/s of the project's step (the full method, ``train_step``) against a
  plain PyTorch loop of the same image encoder with CE + batch-hard triplet
  (``peers.plain_reid_step``), on the same pre-collated batches and device;
- extraction: images/s of ``extract_features`` over the training set with its data path
  (the loader reads and decodes the files), and with the device image cache;
- evaluation: VeRi-size ranking (1,678 x 11,579) against the per-query NumPy loop;
- dictionary: the dense Dic (Eq. 3) against the N^2-bytes write floor.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import peers
import torch

logger = logging.getLogger("suite")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def load_experiment(config: str, overrides: list[str]):
    """The experiment config with absolute data paths and its synthetic set drawn if
    chosen; imports neither Ray nor MLflow (GPU machines have neither)."""
    from orchestrator.config import load_config
    from viewcoop_core.config import ExperimentConfig
    from viewcoop_core.synthetic import ensure_synthetic

    tree = load_config(config, overrides).to_dict()
    tree["data"]["root"] = str(Path(tree["data"]["root"]).resolve())
    if tree["data"]["masks_dir"]:
        tree["data"]["masks_dir"] = str(Path(tree["data"]["masks_dir"]).resolve())
    cfg = ExperimentConfig.from_dict(tree)
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data.root, cfg.data.synthetic)
    return cfg


def method_state(comps, cfg, loss_fn, device: torch.device):
    """The method's ``TrainState``: the run's model, Adam as the engine builds it."""
    from viewcoop_core.engine.train import TrainState, build_optimizer

    return TrainState(
        comps.model,
        loss_fn,
        build_optimizer(comps.model, cfg.optim, cfg.train, device),
        device,
        tau=tuple(cfg.graph.tau),
        amp=cfg.train.amp,
        with_text=comps.model.train_text,
    )


def contiguous(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def training_section(config: str, overrides: list[str], steps: int, device: str) -> dict:
    """Step throughput of the method and of the plain loop, plus extraction images/s."""
    from viewcoop_core.engine.components import build_components, build_loss
    from viewcoop_core.engine.extract import PromptInputs, extract_features, make_loader
    from viewcoop_core.engine.train import (
        EpochLabels,
        epoch_clause_order,
        pk_loader,
        train_step,
    )
    from viewcoop_core.losses import cluster_centroids

    warmup = 2
    cfg = load_experiment(config, [*overrides, f"train.iters={steps + warmup}"])
    dev = torch.device(device)
    comps = build_components(cfg, dev)
    samples = comps.dataset.train
    order = epoch_clause_order(len(samples), 1, cfg.train.seed, cfg.prompt.shuffle_clauses)
    prompts = PromptInputs(comps.view_percent, None, order)
    loader = make_loader(
        samples, comps.test_transform, cfg.train.extract_batch_size, cfg.data.num_workers
    )
    (_, img, txt), extract_s = timed(
        lambda: extract_features(comps.model, loader, dev, prompts, cfg.train.amp), dev
    )
    # The true identities as pseudo-labels: a step costs the same whatever the labels.
    labels = contiguous(np.array([s.pid for s in samples]))
    label_t = torch.as_tensor(labels)
    loss_fn = build_loss(cfg, comps.bundle.embed_dim).to(dev)
    loss_fn.reset(
        cluster_centroids(torch.as_tensor(img), label_t)[0].to(dev),
        cluster_centroids(torch.as_tensor(txt), label_t)[0].to(dev),
    )
    comps.model.prompt_learner.on_clusters_changed(int(labels.max()) + 1)
    plain_encoder = copy.deepcopy(comps.model.clip.visual)
    batches = list(
        pk_loader(samples, labels, comps.train_transform, cfg.train.batch_size, cfg.train, 0, 1, 0)
    )
    state = method_state(comps, cfg, loss_fn, dev)
    epoch_labels = EpochLabels(label_t, label_t)
    comps.model.train()
    for batch in batches[:warmup]:
        train_step(state, batch, epoch_labels, prompts)
    _, ours_s = timed(
        lambda: [train_step(state, b, epoch_labels, prompts) for b in batches[warmup:]], dev
    )
    plain = peers.PlainReid(plain_encoder, comps.bundle.embed_dim, int(labels.max()) + 1).to(dev)
    plain.train()
    optimizer = torch.optim.Adam(plain.parameters(), lr=cfg.optim.lr)

    def plain_steps(chosen):
        for batch in chosen:
            images = batch["image"].to(dev, non_blocking=True)
            target = label_t[batch["index"]].to(dev)
            plain_amp = cfg.train.amp and dev.type == "cuda"
            peers.plain_reid_step(plain, optimizer, images, target, plain_amp)

    plain_steps(batches[:warmup])
    _, plain_s = timed(lambda: plain_steps(batches[warmup:]), dev)
    images = steps * cfg.train.batch_size
    return {
        "model": cfg.model.name,
        "image_size": cfg.model.image_size,
        "batch_size": cfg.train.batch_size,
        "amp": cfg.train.amp,
        "steps": steps,
        "ours_images_per_s": images / ours_s,
        "plain_images_per_s": images / plain_s,
        "ours_over_plain": plain_s / ours_s,
        "num_train_images": len(samples),
        "extract_s": extract_s,
        "extract_images_per_s": len(samples) / extract_s,
        "extract_num_workers": cfg.data.num_workers,
    }


def evaluation_section(device: str, num_query: int = 1678, num_gallery: int = 11579) -> dict:
    """VeRi-size ranking on the device against the per-query NumPy reference."""
    from viewcoop_core.metrics import pairwise_distance, rank_metrics, summarize

    rng = np.random.default_rng(0)
    num_ids, num_cams, dim = 200, 20, 512
    centres = rng.standard_normal((num_ids, dim)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, num_ids, num_query), rng.integers(0, num_ids, num_gallery)
    q_cams, g_cams = rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery)

    def feats(ids):
        x = centres[ids] + 1.5 * rng.standard_normal((len(ids), dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q, g = feats(q_ids), feats(g_ids)
    dev = torch.device(device)
    q_t, g_t = torch.as_tensor(q, device=dev), torch.as_tensor(g, device=dev)

    def ours():
        dist = pairwise_distance(q_t, g_t)
        return summarize(rank_metrics(dist, q_ids, g_ids, q_cams, g_cams))

    ours()  # warm-up (CUDA context, allocator)
    best = min(timed(ours, dev)[1] for _ in range(3))
    metrics = ours()
    distmat = pairwise_distance(q_t, g_t).cpu().numpy()
    reference, numpy_s = timed(
        lambda: peers.numpy_rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams), dev
    )
    return {
        "num_query": num_query,
        "num_gallery": num_gallery,
        "ours_s": best,
        "numpy_per_query_s": numpy_s,
        "speedup": numpy_s / best,
        "mAP": metrics["mAP"],
        "mAP_abs_diff_vs_numpy": abs(metrics["mAP"] - reference["mAP"]),
        "R1_abs_diff_vs_numpy": abs(metrics["R1"] - reference["R1"]),
    }


def dictionary_section(sizes: list[int], device: str) -> list[dict]:
    """Dense Dic at each N against N^2 bytes at the measured copy bandwidth."""
    from viewcoop_core.graph import mutual_dictionary

    dev = torch.device(device)
    bandwidth = peers.copy_bandwidth(dev)
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        labels = []
        for _ in range(2):
            y = rng.integers(0, max(1, n // 65), n).astype(np.int32)
            y[rng.random(n) < 0.2] = -1
            labels.append(torch.as_tensor(y, device=dev) if dev.type == "cuda" else y)
        mutual_dictionary(*labels)
        best = float("inf")
        for _ in range(3):
            dic, seconds = timed(lambda labels=labels: mutual_dictionary(*labels), dev)
            best = min(best, seconds)
            del dic
        floor = n * n / bandwidth
        rows.append(
            {
                "n": n,
                "dictionary_s": best,
                "write_floor_s": floor,
                "over_floor": best / floor,
                "copy_bandwidth_gb_s": bandwidth / 1e9,
            }
        )
    return rows


def ray_section(
    config: str, overrides: list[str], out_dir: Path, num_cpus: int, epochs: int = 5
) -> dict:
    """One training of ``epochs`` through Ray Train against the same epochs without Ray.

    Ray: the wall time between the reports of consecutive epochs (MLflow timestamps).
    Without Ray: extract -> cluster -> train of each epoch in this process (engine only).
    Both sides: the median over epochs 2..``epochs`` (epoch 1 holds the start-up), since
    one epoch on 2 shared cores moves by up to ~20% between identical runs.
    """
    import ray
    from mlflow.tracking import MlflowClient

    from orchestrator.train import ensure_weights, run_training

    if epochs < 3:
        raise ValueError(f"--ray-epochs={epochs}: at least 3 (epochs 2.. are timed)")
    storage = out_dir / "ray-runs"
    overrides = [
        *overrides,
        f"train.epochs={epochs}",
        "train.eval_every=1000",
        "train.progress=false",
        f"ray.storage_path={storage}",
    ]
    cfg = ensure_weights(load_experiment(config, overrides))
    plain = plain_epoch_seconds(cfg, num_cpus)
    start = time.perf_counter()
    outcome = run_training(cfg, run_name="bench-ray-overhead", num_cpus=num_cpus)
    total_s = time.perf_counter() - start
    ray.shutdown()
    client = MlflowClient(outcome.tracking_uri)
    history = client.get_metric_history(outcome.mlflow_run_id, "extract_s")
    stamps = {m.step: m.timestamp / 1000 for m in history}
    timed_epochs = range(2, epochs + 1)
    ray_epochs = [stamps[e] - stamps[e - 1] for e in timed_epochs]
    ray_train = [_metric_at(client, outcome.mlflow_run_id, "train_s", e) for e in timed_epochs]
    ray_epoch = float(np.median(ray_epochs))
    return {
        "config": config,
        "epochs_timed": list(timed_epochs),
        "ray_epoch_s": ray_epoch,
        "ray_epochs_s": ray_epochs,
        "ray_train_s": float(np.median([t for t in ray_train if t is not None])),
        "plain_epoch_s": plain["epoch_s"],
        "plain_epochs_s": plain["epochs_s"],
        "plain_train_s": plain["train_s"],
        "overhead_frac_of_ray_epoch": (ray_epoch - plain["epoch_s"]) / ray_epoch,
        "ray_total_fit_s": total_s,
        "num_workers": cfg.ray.num_workers,
        "cpus_per_worker": cfg.ray.cpus_per_worker,
    }


def _metric_at(client, run_id: str, key: str, step: int) -> float | None:
    values = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
    return values[-1] if values else None


def plain_epoch_seconds(cfg, threads: int) -> dict:
    """The run's epochs 2.. in this process without Ray, on ``threads`` CPU threads
    (medians; ``epochs_s`` lists each): ``engine.local_loop``, i.e. the worker's own
    extract -> cluster -> train (camera normalisation, loss options, batches and
    diagnostics as configured)."""
    from orchestrator.prepare import with_view_masks
    from viewcoop_core.engine.local_loop import train_locally

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = with_view_masks(cfg)
        rows = train_locally(cfg, diagnostics=cfg.train.diagnostics)
    finally:
        torch.set_num_threads(previous)
    timed = [r for r in rows if r["epoch"] >= 2]
    return {
        "epoch_s": float(np.median([r["epoch_s"] for r in timed])),
        "epochs_s": [r["epoch_s"] for r in timed],
        "train_s": float(np.median([r.get("train_s", 0.0) for r in timed])),
        "img_clusters": timed[-1]["img_clusters"],
    }
