"""One epoch of the real loop without Ray: extract -> cluster (service) -> train -> evaluate.

Calls the same engine functions the Ray Train workers run (``viewcoop_core.engine``) and
the clustering step the actor runs, on one device, and prints per-stage seconds and
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
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic


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
        spec = SyntheticSpec(
            num_ids=args.synthetic_ids, num_cameras=args.cameras, image_size=cfg.model.image_size
        )
        make_synthetic(cfg.data.root, spec)
    device = torch.device(args.device)
    comps, build_s = timed(lambda: build_components(cfg, device), device)
    samples = comps.dataset.train
    num = len(samples)
    order = epoch_clause_order(num, 1, cfg.train.seed, cfg.prompt.shuffle_clauses)
    prompts = PromptInputs(comps.view_percent, None, order)
    loader = make_loader(
        samples, comps.test_transform, cfg.train.extract_batch_size, cfg.data.num_workers
    )
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
        "build_s": build_s,
        "extract_s": extract_s,
        "extract_images_per_s": num / extract_s,
        "cluster_service_s": cluster_s,
        **{f"cluster_{k}": v for k, v in result.timings.items()},
        "img_clusters": result.num_img_clusters,
        "txt_clusters": result.num_txt_clusters,
    }
    if result.num_img_clusters >= cfg.train.batch_size // cfg.train.num_instances:
        loss_fn = build_loss(cfg, comps.bundle.embed_dim).to(device)
        loss_fn.reset(
            torch.as_tensor(result.img_centroids, device=device),
            torch.as_tensor(result.txt_centroids, device=device),
        )
        comps.model.prompt_learner.on_clusters_changed(result.num_img_clusters)
        optimizer = build_optimizer(comps.model, cfg.optim)
        train_loader = pk_loader(
            samples,
            result.y_img,
            comps.train_transform,
            cfg.train.batch_size,
            cfg.train,
            seed=0,
            epoch=1,
            num_workers=cfg.data.num_workers,
        )
        labels = EpochLabels(
            torch.tensor(result.y_img, dtype=torch.long),
            torch.tensor(result.y_txt, dtype=torch.long),
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
    else:
        figures["train_skipped"] = f"{result.num_img_clusters} clusters < P"
    metrics, eval_s = timed(
        lambda: evaluate(
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
