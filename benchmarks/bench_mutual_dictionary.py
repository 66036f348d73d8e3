"""Time the mutual dictionary Dic (Eq. 3) per backend at a given N.

    python benchmarks/bench_mutual_dictionary.py --n 37778            # VeRi-776 train size
    python benchmarks/bench_mutual_dictionary.py --n 113346 --backends cupy

Labels are random with VeRi-like cluster counts (N / 65 clusters, 20% outliers by
default). Each backend is run once to warm up (allocator, CUDA context, kernel
compile), then timed ``--repeats`` times; the median and the best are printed. On
CUDA the fused CuPy kernel is also compared with the naive CuPy broadcast
(two comparisons, two outlier masks, a sum: several N x N temporaries), and the
write floor (filling an N x N int8 array) is printed for reference. graph_statistics
(O(N log N), no N x N) is timed on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viewcoop_core.graph import graph_statistics, mutual_dictionary


def make_labels(n: int, n_clusters: int, outlier_frac: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(2):
        y = rng.integers(0, n_clusters, size=n).astype(np.int32)
        y[rng.random(n) < outlier_frac] = -1
        labels.append(y)
    return tuple(labels)


def time_call(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Seconds per call after one warm-up; ``sync`` waits for queued GPU work."""
    result = fn()
    sync()
    del result
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
        del result
    return times


def report(name: str, times: list[float], n: int) -> None:
    med = statistics.median(times)
    gbps = n * n / med / 1e9
    print(
        f"{name:<28s} median {med * 1e3:10.2f} ms   best {min(times) * 1e3:10.2f} ms"
        f"   ({gbps:6.2f} GB/s of int8 output)"
    )


def naive_cupy_dictionary(cupy, y_img, y_txt):
    """The straightforward CuPy broadcast: several N x N bool temporaries, then a sum."""
    same_img = (y_img[:, None] == y_img[None, :]) & (y_img[:, None] != -1)
    same_txt = (y_txt[:, None] == y_txt[None, :]) & (y_txt[:, None] != -1)
    return same_img.astype(cupy.int8) + same_txt.astype(cupy.int8)


def no_sync() -> None:
    return None


def bench_cpu(args: argparse.Namespace, y_img: np.ndarray, y_txt: np.ndarray) -> None:
    inputs = {"numpy": (y_img, y_txt), "torch": (torch.from_numpy(y_img), torch.from_numpy(y_txt))}
    for backend in [b for b in args.backends if b in inputs]:
        call = partial(mutual_dictionary, *inputs[backend], backend, args.max_tile_bytes)
        report(f"{backend} (cpu)", time_call(call, args.repeats, no_sync), args.n)
    stats_times = time_call(partial(graph_statistics, y_img, y_txt), args.repeats, no_sync)
    print(f"{'graph_statistics (cpu)':<28s} median {statistics.median(stats_times) * 1e3:10.2f} ms")


def bench_cuda(args: argparse.Namespace, y_img: np.ndarray, y_txt: np.ndarray) -> None:
    print(f"device: {torch.cuda.get_device_name()}")
    if "torch" in args.backends:
        yi, yt = torch.from_numpy(y_img).cuda(), torch.from_numpy(y_txt).cuda()
        call = partial(mutual_dictionary, yi, yt, "torch", args.max_tile_bytes)
        report("torch (cuda)", time_call(call, args.repeats, torch.cuda.synchronize), args.n)
    if "cupy" not in args.backends:
        return
    try:
        import cupy
    except ImportError:
        print("cupy: not installed, skipped")
        return
    yi, yt = cupy.asarray(y_img), cupy.asarray(y_txt)
    sync = cupy.cuda.Device().synchronize
    fused_call = partial(mutual_dictionary, yi, yt, "cupy", args.max_tile_bytes)
    fused = time_call(fused_call, args.repeats, sync)
    report("cupy fused kernel", fused, args.n)
    naive = time_call(partial(naive_cupy_dictionary, cupy, yi, yt), args.repeats, sync)
    report("cupy naive broadcast", naive, args.n)
    out = cupy.empty((args.n, args.n), dtype=cupy.int8)
    report("cupy write floor (fill)", time_call(partial(out.fill, 1), args.repeats, sync), args.n)
    print(f"fused speed-up over naive: {statistics.median(naive) / statistics.median(fused):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=37_778, help="number of samples N")
    parser.add_argument("--clusters", type=int, default=0, help="clusters per modality (0: N / 65)")
    parser.add_argument("--outlier-frac", type=float, default=0.2)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["numpy", "torch", "cupy"],
        choices=["numpy", "torch", "cupy"],
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tile-bytes", type=int, default=1 << 30)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU backends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); on a loaded 2-core box 1 is faster",
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    n_clusters = args.clusters or max(1, args.n // 65)
    y_img, y_txt = make_labels(args.n, n_clusters, args.outlier_frac, args.seed)
    print(
        f"N={args.n:,}  clusters/modality={n_clusters}  outliers={args.outlier_frac:.0%}  "
        f"Dic={args.n * args.n / 1e9:.2f} GB int8  torch threads={torch.get_num_threads()}"
    )
    if not args.no_cpu:
        bench_cpu(args, y_img, y_txt)
    if torch.cuda.is_available():
        bench_cuda(args, y_img, y_txt)
    else:
        print("no CUDA device: GPU backends skipped")


if __name__ == "__main__":
    main()
