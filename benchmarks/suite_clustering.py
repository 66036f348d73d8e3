"""Clustering, side by side: ``pseudo_labels`` against its k-NN floor, the dense Cluster
Contrast reference and scikit-learn's DBSCAN alone, on easy and hard features.

Every measurement runs in a fresh child process (``python benchmarks/suite.py --child``)
so its peak memory is its own: peak RSS minus the RSS once the features exist.
The children write their labels; the parent computes the ARIs (same partition?) and
the growth exponent of each method over the sizes.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# The two feature sets: 10 images per identity in d = 256, identity directions plus
# isotropic noise of this norm (1.0: ARI ~1 against the identities; 2.2: ARI ~0.5,
# two thirds outliers, the overlapping case).
FEATURE_NOISE = {"easy": 1.0, "hard": 2.2}
METHODS = ("ours", "floor", "dense", "sklearn_dbscan")


@dataclass(frozen=True)
class Case:
    method: str
    n: int
    features: str
    threads: int
    device: str = "cpu"
    dim: int = 256
    ids_per_cluster: int = 10
    seed: int = 0


def make_features(case: Case) -> tuple[torch.Tensor, np.ndarray]:
    """(n, dim) float32 unit features and their identities (seeded, same in every child)."""
    rng = np.random.default_rng(case.seed)
    num_ids = max(1, case.n // case.ids_per_cluster)
    centres = rng.standard_normal((num_ids, case.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    identity = rng.choice(num_ids, size=case.n, p=rng.dirichlet(np.full(num_ids, 4.0)))
    noise = FEATURE_NOISE[case.features] / np.sqrt(case.dim)
    points = centres[identity] + noise * rng.standard_normal((case.n, case.dim)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(points.astype(np.float32)), identity


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def current_rss_bytes() -> int:
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) from now; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the last ``reset_peak_rss`` (or since the start)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _StageLog(logging.Handler):
    """Keeps the Jaccard stage timings the library logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        # logging unwraps a lone mapping argument: record.args is the dict itself.
        if record.msg.startswith("jaccard stage seconds") and isinstance(record.args, dict):
            self.stages = dict(record.args)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _method(case: Case):
    """(call, prepare) for ``case.method``: ``prepare(x)`` makes the untimed input,
    ``call(x, prepared)`` is the measured call returning labels (or ranks)."""
    import peers
    from sklearn.cluster import DBSCAN

    from viewcoop_core.clustering import jaccard_distance, pseudo_labels
    from viewcoop_core.config import ClusterConfig

    config = ClusterConfig()

    def nothing(x):
        return None

    if case.method == "ours":
        return (lambda x, _: pseudo_labels(x, config)), nothing
    if case.method == "floor":
        return (lambda x, _: peers.knn_floor(x, config.k1 + 1).cpu().numpy()), nothing
    if case.method == "dense":
        return (
            lambda x, _: peers.dense_pseudo_labels(x.cpu(), config.eps, config.min_samples)
        ), nothing
    if case.method == "sklearn_dbscan":
        model = DBSCAN(eps=config.eps, min_samples=config.min_samples, metric="precomputed")
        cut = float(np.nextafter(np.float32(config.eps), np.float32(1.0)))
        # Only DBSCAN is timed; its input, the project's sparse Jaccard matrix, is prepared.
        return (lambda _, matrix: model.fit_predict(matrix)), (
            lambda x: jaccard_distance(x, max_distance=cut)
        )
    raise ValueError(f"unknown method {case.method!r}; known: {METHODS}")


def run_case(case: Case, labels_path: Path) -> dict:
    """One timed measurement in this process; writes the labels (or ranks) to labels_path.

    A warm-up call on 300 points first takes lazy imports, thread pools and (on CUDA)
    kernel loading out of the timed call."""
    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    call, prepare = _method(case)
    warm = make_features(Case(case.method, 300, case.features, case.threads))[0].to(device)
    call(warm, prepare(warm))
    features = make_features(case)[0].to(device)
    prepared = prepare(features)
    stage_log = _StageLog()
    logging.getLogger("viewcoop_core.clustering.jaccard").addHandler(stage_log)
    logging.getLogger("viewcoop_core.clustering.jaccard").setLevel(logging.DEBUG)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss_bytes()
    reset = reset_peak_rss()
    _sync(device)
    start = time.perf_counter()
    out = call(features, prepared)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    np.save(labels_path, np.asarray(out))
    result = {
        **asdict(case),
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "method_peak_bytes": max(0, peak - baseline),
        "peak_reset": reset,
        "stages": stage_log.stages if case.method == "ours" else {},
    }
    if device.type == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return result


def run_child(case: Case, workdir: Path, timeout: float) -> dict:
    """``run_case`` in a fresh process; its JSON result plus the path of its labels."""
    labels_path = (
        workdir / f"{case.method}-{case.n}-{case.features}-{case.threads}-{case.device}.npy"
    )
    command = [
        sys.executable,
        str(BENCH / "suite.py"),
        "--child",
        json.dumps(asdict(case)),
        str(labels_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if done.returncode != 0:
        return {**asdict(case), "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["labels_path"] = str(labels_path)
    return result


def growth_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(N): 1 linear, 2 quadratic."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    # Outliers are singletons, never one cluster: -1 labels become unique ids.
    def singletons(y: np.ndarray) -> np.ndarray:
        return np.where(y < 0, y.max(initial=0) + 1 + np.arange(y.size), y)

    return float(adjusted_rand_score(singletons(a), singletons(b)))


def clustering_section(
    sizes: list[int],
    threads: list[int],
    features: list[str],
    device: str,
    dense_max_n: int,
    cpu_reference_max_n: int = 0,
    timeout: float = 3600,
) -> dict:
    """All cases; returns {"rows": [...], "growth": {...}} with ratios and ARIs.

    On CUDA the dense peer and DBSCAN alone are CPU programs: they run up to
    ``dense_max_n``; ``ours`` also runs on the CPU up to ``cpu_reference_max_n`` for the
    ARI of the device partition against the CPU one."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="viewcoop-bench-") as tmp:
        workdir = Path(tmp)
        for kind in features:
            for n in sizes:
                for t in threads:
                    results = {}
                    for method in METHODS:
                        if method == "dense" and (n > dense_max_n or t != threads[0]):
                            continue
                        if (
                            method == "sklearn_dbscan"
                            and device != "cpu"
                            and n > cpu_reference_max_n
                        ):
                            continue
                        on = "cpu" if method in ("dense", "sklearn_dbscan") else device
                        case = Case(method, n, kind, t, on)
                        logging.getLogger("suite").info("clustering: %s", case)
                        results[method] = run_child(case, workdir, timeout)
                    if device != "cpu" and n <= cpu_reference_max_n and t == threads[0]:
                        case = Case("ours", n, kind, t, "cpu")
                        results["ours_cpu"] = run_child(case, workdir, timeout)
                    rows.append(_clustering_row(n, kind, t, device, results))
    return {"rows": rows, "growth": _growth(rows)}


def _clustering_row(n: int, kind: str, threads: int, device: str, results: dict) -> dict:
    ours = results["ours"]
    row = {"n": n, "features": kind, "threads": threads, "device": device, "cases": results}
    if "error" in ours:
        return row
    labels = np.load(ours["labels_path"])
    row.update(
        ours_s=ours["seconds"],
        ours_peak_bytes=ours["method_peak_bytes"],
        ours_stages=ours["stages"],
        clusters=int(labels.max(initial=-1) + 1),
        outlier_frac=float((labels < 0).mean()),
    )
    floor = results.get("floor", {})
    if "seconds" in floor:
        row["floor_s"] = floor["seconds"]
        row["ours_over_floor"] = ours["seconds"] / floor["seconds"]
    if "peak_cuda_bytes" in ours:
        row["ours_peak_cuda_bytes"] = ours["peak_cuda_bytes"]
    for peer in ("dense", "sklearn_dbscan", "ours_cpu"):
        result = results.get(peer, {})
        if "seconds" not in result:
            continue
        row[f"{peer}_s"] = result["seconds"]
        row[f"{peer}_peak_bytes"] = result["method_peak_bytes"]
        row[f"ari_vs_{peer}"] = adjusted_rand(labels, np.load(result["labels_path"]))
    if "dense_s" in row:
        row["speedup_vs_dense"] = row["dense_s"] / ours["seconds"]
        row["memory_ratio_vs_dense"] = row["dense_peak_bytes"] / max(1, ours["method_peak_bytes"])
    return row


def _growth(rows: list[dict]) -> dict:
    growth = {}
    for kind in sorted({r["features"] for r in rows}):
        for t in sorted({r["threads"] for r in rows}):
            for key in ("ours_s", "floor_s", "dense_s", "sklearn_dbscan_s"):
                points = [
                    (r["n"], r[key])
                    for r in rows
                    if r["features"] == kind and r["threads"] == t and key in r
                ]
                if len(points) >= 2:
                    sizes, secs = zip(*points)
                    growth[f"{key[:-2]}/{kind}/{t}t"] = growth_exponent(list(sizes), list(secs))
    return growth
