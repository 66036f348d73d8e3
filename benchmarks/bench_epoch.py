"""One epoch of the real loop without Ray: extract -> cluster (service) -> train -> evaluate.

Calls the same stage functions the Ray Train workers run (``workers.epoch``) and the
clustering service the actor wraps, on one device, and prints per-stage seconds and
images/s as JSON. Made for GPU machines that have no Ray:

    python benchmarks/bench_epoch.py --config experiments/veri776_vitb16.yaml \
        --set model.pretrained=null data.dataset=synthetic data.root=/tmp/syn \
        --synthetic-ids 400 --iters 50 --out $OUT/epoch.json

``--synthetic-ids N`` draws a synthetic set of N identities at the model's input size
first (no dataset download needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import load_config
from orchestrator.train import absolute_paths
from viewcoop_core.data.synthetic import make_synthetic
from viewcoop_core.losses import ViewCoOpLoss
from workers import epoch as stages
from workers.clustering_service import ClusteringService, service_kwargs


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
    cfg = absolute_paths(load_config(args.config, [*args.set, f"train.iters={args.iters}"]))
    if args.synthetic_ids and not (Path(cfg.data.root) / "image_train").is_dir():
        size = cfg.model.image_size
        make_synthetic(
            cfg.data.root,
            num_ids=args.synthetic_ids,
            num_cameras=args.cameras,
            image_size=(size, size),
        )
    device = torch.device(args.device)
    comps, build_s = timed(lambda: stages.build_components(cfg, device), device)
    samples = comps.dataset.train
    num = len(samples)
    order = stages.epoch_clause_order(num, 1, cfg.train.seed, cfg.prompt.shuffle_clauses)
    loader = stages.make_loader(
        samples, comps.test_transform, cfg.train.extract_batch_size, cfg.data.num_workers
    )
    (_, img, txt), extract_s = timed(
        lambda: stages.extract_features(
            comps.model, loader, device, comps.view_percent, None, order, cfg.train.amp
        ),
        device,
    )
    service = ClusteringService(
        num,
        true_ids=np.array([s.pid for s in samples]),
        device=args.device,
        **service_kwargs(cfg.cluster, cfg.graph),
    )
    result, cluster_s = timed(lambda: service.cluster_features(1, img, txt), device)
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": cfg.model.name,
        "image_size": cfg.model.image_size,
        "num_train_images": num,
        "build_s": build_s,
        "extract_s": extract_s,
        "extract_images_per_s": num / extract_s,
        "cluster_service_s": cluster_s,
        **{f"cluster_{k}": v for k, v in result.timings.items()},
        "img_clusters": result.num_img_clusters,
        "txt_clusters": result.num_txt_clusters,
    }
    if result.num_img_clusters >= cfg.train.batch_size // cfg.train.num_instances:
        loss_fn = ViewCoOpLoss(comps.bundle.embed_dim, cfg.loss.terms).to(device)
        loss_fn.reset(
            torch.as_tensor(result.img_centroids, device=device),
            torch.as_tensor(result.txt_centroids, device=device),
        )
        comps.model.prompt_learner.on_clusters_changed(result.num_img_clusters)
        optimizer = stages.build_optimizer(
            comps.model, cfg.optim.lr, cfg.optim.prompt_lr, cfg.optim.weight_decay
        )
        train_loader = stages.pk_loader(
            samples,
            result.y_img,
            comps.train_transform,
            cfg.train.batch_size,
            cfg.train.num_instances,
            cfg.train.iters,
            seed=0,
            epoch=1,
            num_workers=cfg.data.num_workers,
        )
        y_img, y_txt = (
            torch.tensor(result.y_img, dtype=torch.long),
            torch.tensor(result.y_txt, dtype=torch.long),
        )
        train, train_s = timed(
            lambda: stages.train_epoch(
                comps.model,
                loss_fn,
                optimizer,
                train_loader,
                device,
                y_img,
                y_txt,
                comps.view_percent,
                order,
                tuple(cfg.graph.tau),
                cfg.train.amp,
                comps.model.train_text,
            ),
            device,
        )
        figures.update({"train_s": train_s, "train_images_per_s": train["train_images_per_s"]})
    else:
        figures["train_skipped"] = f"{result.num_img_clusters} clusters < P"
    metrics, eval_s = timed(
        lambda: stages.evaluate(
            comps.model, comps.dataset, comps.test_transform, device, cfg.train.extract_batch_size
        ),
        device,
    )
    figures.update({"eval_s": eval_s, **metrics})
    text = json.dumps(figures, indent=2, default=float)
    logging.getLogger("bench_epoch").info("\n%s", text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
