"""Time and peak memory of ``pseudo_labels`` on random clustered features.

Run from the repository root (the package importable, e.g. ``pip install -e .``):
    python benchmarks/bench_pseudo_labels.py --n 20000 --dim 512
    python benchmarks/bench_pseudo_labels.py --n 37778 --device cuda --backend torch
    python benchmarks/bench_pseudo_labels.py --n 20000 --verbose   # per-stage timings

The features imitate a re-id training set: ``n / ids_per_cluster`` identities with
uneven sizes, each a random unit direction plus isotropic noise, L2-normalised. The
identity labels are known, so the adjusted Rand index of the pseudo-labels is reported
too (outliers count as singletons).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from viewcoop_core.clustering import pseudo_labels
from viewcoop_core.config import ClusterConfig


def clustered_features(
    n: int, dim: int, ids_per_cluster: float, noise: float, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """(n, dim) float32 unit features and (n,) int64 identity of each."""
    rng = np.random.default_rng(seed)
    num_ids = max(1, round(n / ids_per_cluster))
    centres = rng.standard_normal((num_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    identity = rng.choice(num_ids, size=n, p=rng.dirichlet(np.full(num_ids, 4.0)))
    # Per-coordinate noise noise / sqrt(dim): a noise vector of norm ~noise.
    points = centres[identity] + (noise / np.sqrt(dim)) * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(points), identity


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ids-per-cluster", type=float, default=40.0)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log per-stage timings")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    features, identity = clustered_features(
        args.n, args.dim, args.ids_per_cluster, args.noise, args.seed
    )
    features = features.to(device)
    rss_before = peak_rss_gib()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    # The library logs the Jaccard and DBSCAN halves (INFO) and Jaccard stages (DEBUG).
    start = time.perf_counter()
    settings = ClusterConfig(
        eps=args.eps, min_samples=args.min_samples, k1=args.k1, k2=args.k2, backend=args.backend
    )
    labels = pseudo_labels(features, settings)
    seconds = time.perf_counter() - start

    outliers = labels == -1
    singleton_ids = np.where(outliers, labels.max() + 1 + np.arange(args.n), labels)
    report = {
        "n": args.n,
        "dim": args.dim,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "pseudo_labels_s": round(seconds, 2),
        "clusters": int(labels.max()) + 1,
        "outliers": int(outliers.sum()),
        "true_ids": int(np.unique(identity).size),
        "ari_vs_true_ids": round(adjusted_rand_score(identity, singleton_ids), 4),
        "peak_rss_gib_before": round(rss_before, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    if device.type == "cuda":
        report["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    for key, value in report.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    sys.exit(main())
