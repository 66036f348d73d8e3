"""One epoch of the real loop without Ray: extract -> cluster (service) -> train -> evaluate.

Calls the same engine functions the Ray Train workers run (``viewcoop_core.engine``) and
the clustering step the actor runs, on one device, and prints per-stage seconds and
images/s as JSON. Made for GPU machines that have no Ray:

    python benchmarks/bench_epoch.py --config experiments/veri776_vitb16.yaml \
        --set model.pretrained=null data.dataset=synthetic data.root=/tmp/syn \
        --synthetic-ids 400 --iters 50 --out $OUT/epoch.json

``--synthetic-ids N`` uses a synthetic set of N identities (drawn once at the config's
``data.synthetic.image_size``; no dataset download needed). No Ray, no MLflow: the GPU
switches of ``train`` (amp, fused_optimizer, compile, device_cache) apply as configured.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite_training import load_experiment  # noqa: E402

from viewcoop_core.engine.acceleration import accelerate, image_cache  # noqa: E402
from viewcoop_core.engine.clustering_step import ClusteringStep
from viewcoop_core.engine.components import build_components, build_loss
from viewcoop_core.engine.device_cache import DeviceImageCache, pk_batches  # noqa: E402
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
from viewcoop_core.losses import cluster_centroids  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="experiments/demo.yaml")
    parser.add_argument("--set", nargs="*", default=[], help="dotted overrides")
    parser.add_argument(
        "--synthetic-ids", type=int, default=0, help="draw a synthetic set of this many ids first"
    )
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--iters", type=int, default=20, help="training iterations to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the figures as JSON here too")
    return parser.parse_args()


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args()
    overrides = [*args.set, f"train.iters={args.iters}"]
    if args.synthetic_ids:
        overrides += [
            "data.dataset=synthetic",
            f"data.synthetic.num_ids={args.synthetic_ids}",
            f"data.synthetic.num_cameras={args.cameras}",
        ]
    cfg = load_experiment(args.config, overrides)
    device = torch.device(args.device)
    comps, build_s = timed(lambda: build_components(cfg, device), device)
    accelerate(comps.model, cfg.train, device)
    samples = comps.dataset.train
    num = len(samples)
    size = (comps.bundle.image_size, comps.bundle.image_size)
    cache, cache_s = timed(
        lambda: image_cache(samples, size, comps.bundle.mean, comps.bundle.std, cfg.train, device),
        device,
    )
    order = epoch_clause_order(num, 1, cfg.train.seed, cfg.prompt.shuffle_clauses)
    prompts = PromptInputs(comps.view_percent, None, order)
    if cache is None:
        loader = make_loader(
            samples, comps.test_transform, cfg.train.extract_batch_size, cfg.data.num_workers
        )
    else:
        loader = cache.batches(cfg.train.extract_batch_size)
    (_, img, txt), extract_s = timed(
        lambda: extract_features(comps.model, loader, device, prompts, cfg.train.amp),
        device,
    )
    step = ClusteringStep(
        cfg.cluster,
        cfg.graph,
        true_ids=np.array([s.pid for s in samples]),
        camids=np.array([s.camid for s in samples]),
        device=args.device,
    )
    result, cluster_s = timed(lambda: step.run(1, img, txt), device)
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": cfg.model.name,
        "image_size": cfg.model.image_size,
        "num_train_images": num,
        "switches": {
            k: getattr(cfg.train, k) for k in ("amp", "fused_optimizer", "compile", "device_cache")
        },
        "build_s": build_s,
        "device_cache_build_s": cache_s if cache is not None else None,
        "extract_s": extract_s,
        "extract_images_per_s": num / extract_s,
        "cluster_service_s": cluster_s,
        **{f"cluster_{k}": v for k, v in result.timings.items()},
        "img_clusters": result.num_img_clusters,
        "txt_clusters": result.num_txt_clusters,
    }
    y_img, y_txt = result.y_img, result.y_txt
    img_centroids, txt_centroids = result.img_centroids, result.txt_centroids
    figures["train_labels"] = "pseudo-labels"
    if result.num_img_clusters < cfg.train.batch_size // cfg.train.num_instances:
        # A random-init backbone may find too few clusters for a P x K batch: train on the
        # true identities (known for synthetic data) so the step is still measured.
        y_img = y_txt = np.unique([s.pid for s in samples], return_inverse=True)[1]
        labels_t = torch.as_tensor(y_img)
        img_centroids = cluster_centroids(torch.as_tensor(img), labels_t)[0].numpy()
        txt_centroids = cluster_centroids(torch.as_tensor(txt), labels_t)[0].numpy()
        figures["train_labels"] = f"true ids ({result.num_img_clusters} clusters < P)"
    num_clusters = int(y_img.max()) + 1
    loss_fn = build_loss(cfg, comps.bundle.embed_dim).to(device)
    loss_fn.reset(
        torch.as_tensor(img_centroids, device=device), torch.as_tensor(txt_centroids, device=device)
    )
    comps.model.prompt_learner.on_clusters_changed(num_clusters)
    optimizer = build_optimizer(comps.model, cfg.optim, cfg.train, device)
    if cache is None:
        train_loader = pk_loader(
            samples, y_img, comps.train_transform, cfg.train.batch_size, cfg.train,
            seed=0, epoch=1, num_workers=cfg.data.num_workers,
        )  # fmt: skip
    else:
        train_loader = pk_batches(
            cache, y_img, cfg.train.batch_size, cfg.train.num_instances, cfg.train.iters, 0, 1
        )
    labels = EpochLabels(
        torch.as_tensor(y_img, dtype=torch.long), torch.as_tensor(y_txt, dtype=torch.long)
    )
    state = TrainState(
        comps.model,
        loss_fn,
        optimizer,
        device,
        tau=tuple(cfg.graph.tau),
        amp=cfg.train.amp,
        with_text=comps.model.train_text,
    )
    train, train_s = timed(lambda: train_epoch(state, train_loader, labels, prompts), device)
    figures.update({"train_s": train_s, "train_images_per_s": train["train_images_per_s"]})
    loaders = None if cache is None else _test_loaders(comps, cfg, device)
    metrics, eval_s = timed(
        lambda: evaluate(
            comps.model,
            comps.dataset,
            comps.test_transform,
            device,
            cfg.train.extract_batch_size,
            cfg.data.num_workers,
            cfg.train.amp,
            loaders,
        ),
        device,
    )
    figures.update({"eval_s": eval_s, **metrics})
    text = json.dumps(figures, indent=2, default=float)
    logging.getLogger("bench_epoch").info("\n%s", text)
    if args.out:
        Path(args.out).write_text(text)


def _test_loaders(comps, cfg, device):
    """Evaluation batches from a device cache of the test images (built once here)."""
    test = list(comps.dataset.query) + list(comps.dataset.gallery) + list(comps.dataset.test)
    unique = list({s.path: s for s in test}.values())
    size = (comps.bundle.image_size, comps.bundle.image_size)
    cache = DeviceImageCache(unique, size, comps.bundle.mean, comps.bundle.std, device)
    return lambda samples: cache.loader_for(samples, cfg.train.extract_batch_size)


if __name__ == "__main__":
    main()
