"""The side-by-side benchmark suite: every figure measured next to its peer, in one run.

    python benchmarks/suite.py --out runs/bench-cpu                       # CPU defaults
    python benchmarks/suite.py --sections clustering --sizes 2000 5000 --threads 1
    python benchmarks/suite.py --device cuda --sizes 37778 113000 --threads 16 \\
        --train-config experiments/veri776_vitb16.yaml --train-set ...     # see gpu_check

Sections (``--sections``): clustering (``suite_clustering``: pseudo_labels vs its k-NN
floor, the dense Cluster Contrast reference and scikit-learn DBSCAN alone, easy and hard
features, time, peak memory, ARI, growth exponents), training (the method's step vs a
plain CE + triplet loop, and extraction with its data path), ray (an epoch through Ray
Train vs without Ray), evaluation (VeRi size vs per-query NumPy), dictionary (Dic vs the
N^2-bytes write floor). Writes ``suite.json`` under ``--out`` and appends a dated table
with the device, the versions and the command to ``--results`` (benchmarks/RESULTS.md).
Speed targets are printed next to the figures; nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for path in (str(REPO), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

logger = logging.getLogger("suite")

SECTIONS = ("clustering", "training", "ray", "evaluation", "dictionary")
# The targets, printed beside the measured figures (never asserted).
CPU_TARGETS = {
    "ours_over_floor": "<= 3x at N = 10,000 and 20,000, 1 and 2 threads",
    "memory_ratio_vs_dense": ">= 8x at N = 20,000",
    "ari_vs_dense": "1.0",
    "ray_overhead": "<= 10% of the epoch (demo)",
}
GPU_TARGETS = {
    "clustering_37778": "<= 50 ms per modality, ARI 1.0 vs CPU",
    "clustering_113000": "<= 1 s within 16 GB",
    "ours_over_plain": ">= 1.0x the plain loop's images/s",
    "extract_images_per_s": ">= 7,000 images/s with data",
    "evaluation": "<= 10 ms at VeRi size",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000, 10000, 20000])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--features", nargs="+", default=["easy", "hard"])
    parser.add_argument(
        "--dense-max-n", type=int, default=20000, help="largest N for the dense peer"
    )
    parser.add_argument(
        "--cpu-reference-max-n", type=int, default=40000, help="on CUDA: ARI vs CPU up to this N"
    )
    parser.add_argument("--train-config", default="experiments/demo.yaml")
    parser.add_argument("--train-set", nargs="*", default=[])
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--ray-config", default="experiments/demo.yaml")
    parser.add_argument("--ray-set", nargs="*", default=[])
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument(
        "--ray-epochs", type=int, default=5, help="epochs of the Ray run; 2.. are timed"
    )
    parser.add_argument("--dictionary-sizes", nargs="+", type=int, default=[20000])
    parser.add_argument("--eval-size", nargs=2, type=int, default=[1678, 11579], metavar=("Q", "G"))
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--results", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--note", default="", help="a line printed under the table")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "LABELS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn
    import torch

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }
    for name in ("cupy", "ray", "open_clip"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            found[name] = "absent"
    return found


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def run(args: argparse.Namespace) -> dict:
    from suite_clustering import clustering_section
    from suite_training import (
        dictionary_section,
        evaluation_section,
        ray_section,
        training_section,
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": device_name(args.device),
        "versions": versions(),
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "load_average": os.getloadavg(),
    }
    if "clustering" in args.sections:
        report["clustering"] = clustering_section(
            args.sizes,
            args.threads,
            args.features,
            args.device,
            args.dense_max_n,
            cpu_reference_max_n=args.cpu_reference_max_n,
        )
    if "training" in args.sections:
        report["training"] = training_section(
            args.train_config, args.train_set, args.train_steps, args.device
        )
    if "ray" in args.sections:
        report["ray"] = guarded(
            lambda: ray_section(args.ray_config, args.ray_set, out, args.ray_cpus, args.ray_epochs)
        )
    if "evaluation" in args.sections:
        report["evaluation"] = evaluation_section(args.device, *args.eval_size)
    if "dictionary" in args.sections:
        report["dictionary"] = dictionary_section(args.dictionary_sizes, args.device)
    report["load_average_after"] = os.getloadavg()
    (out / "suite.json").write_text(json.dumps(report, indent=2, default=_plain))
    return report


def guarded(fn):
    """A section that needs something optional (Ray): its figures, or why it was skipped."""
    try:
        return fn()
    except ImportError as err:
        return {"skipped": f"{type(err).__name__}: {err}"}


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        from suite_clustering import Case, run_case

        case = Case(**json.loads(args.child[0]))
        print(json.dumps(run_case(case, Path(args.child[1])), default=_plain))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args)
    from suite_report import markdown

    text = markdown(report, args.note)
    print(text)
    results = Path(args.results)
    with results.open("a") as handle:
        handle.write(("\n" if results.exists() and results.stat().st_size else "") + text)
    logger.info("figures: %s; table appended to %s", Path(args.out) / "suite.json", results)


if __name__ == "__main__":
    main()
