"""One command that measures the project on a GPU machine (torch + CuPy, nothing else):

    python3 benchmarks/gpu_check.py --out $OUT/gpu                 # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry    # anywhere, CPU, ~1 min
    python benchmarks/gpu_check.py --download-wheels .whl          # here, before a visit

Steps, each bounded by sizes and step counts (never by wall time), everything written
under ``--out``: 1. install the missing packages from the wheels that travel (``--wheels``,
default ``.whl``: open_clip_torch, ftfy, wcwidth; pip --target, no index); 2. the
``gpu``-marked tests; 3. the suite's clustering at VeRi-776 (37,778) and VehicleID
(113,000) sizes with the CPU partition as reference at 37,778, evaluation at VeRi size,
the dictionary at both sizes, the training step against the plain loop and extraction,
on ViT-B-16 at 256 (``experiments/veri776_vitb16.yaml``, random init, synthetic images);
4. one epoch of the real loop (extract -> cluster -> train -> evaluate, the engine the
Ray workers run, without Ray: Ray and MLflow are not on that machine).

``--dry-run`` runs the same steps on the CPU at toy sizes with the tiny CLIP, so the
command cannot rot between GPU visits (CI runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NEEDED = {"open_clip": "open_clip_torch", "ftfy": "ftfy", "wcwidth": "wcwidth"}
WHEELS = ("open_clip_torch==3.3.0", "ftfy==6.3.1", "wcwidth==0.9.4")
SITE = Path("/tmp/viewcoop-site")

# (full, dry-run) settings of each step.
PLAN = {
    "sizes": ([37778, 113000], [600]),
    "features": (["easy", "hard"], ["easy"]),
    "threads": ([16], [1]),
    "dense_max_n": (0, 600),
    "cpu_reference_max_n": (40000, 600),
    "dictionary_sizes": ([37778, 113346], [1000]),
    "train_config": ("experiments/veri776_vitb16.yaml", "experiments/demo.yaml"),
    "train_steps": (20, 2),
    "synthetic": (
        {"num_ids": 300, "num_cameras": 6, "images_per_camera": 3},
        {"num_ids": 24, "num_cameras": 3, "images_per_camera": 2},
    ),  # fmt: skip
    "epoch_iters": (50, 2),
    # The training batch: the config's own on the GPU (64 = 16 ids x 4); P x K = 4 x 2 on
    # the dry run's 24 identities.
    "batch": ([], ["train.batch_size=8", "train.num_instances=2"]),
    "num_workers": (8, 0),
    "eval_size": ([1678, 11579], [200, 1000]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes")
    parser.add_argument("--wheels", default=str(REPO / ".whl"))
    parser.add_argument("--download-wheels", metavar="DIR", help="fetch the wheels here, then stop")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "suite", "epoch"])
    return parser.parse_args(argv)


def setting(name: str, dry: bool):
    return PLAN[name][1 if dry else 0]


def download_wheels(directory: str) -> None:
    """The pure wheels the GPU machine lacks, for its Python (3.12), into ``directory``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
        "-d", directory, *WHEELS,
    ]  # fmt: skip
    subprocess.run(command, check=True)


def install_missing(wheels: Path, log: dict) -> None:
    """pip --target the wheels of missing packages (no index) and put them on sys.path."""
    missing = [mod for mod in NEEDED if importlib.util.find_spec(mod) is None]
    log["missing_before"] = missing
    if not missing:
        return
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"missing {missing} and no wheels in {wheels}; run --download-wheels")
    command = [
        sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
        "--no-cache-dir", "--upgrade", "--target", str(SITE), *files,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    sys.path.insert(0, str(SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")]
    )
    log["installed"] = [Path(f).name for f in files]


def run_gpu_tests(out: Path, log: dict) -> None:
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
        "tests/gpu", f"--junitxml={out / 'gpu-tests.xml'}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (out / "gpu-tests.log").write_text(done.stdout + done.stderr)
    log["gpu_tests"] = {
        "returncode": done.returncode,
        "summary": (done.stdout.strip().splitlines() or [""])[-1],
        "seconds": time.perf_counter() - start,
    }


def synthetic_overrides(out: Path, dry: bool, image_size: int) -> list[str]:
    """Overrides that point a config at a synthetic set drawn at ``image_size``."""
    spec = setting("synthetic", dry)
    root = out / "synthetic"
    items = [
        "data.dataset=synthetic", f"data.root={root}", "data.masks_dir=null",
        f"data.num_workers={setting('num_workers', dry)}", "model.pretrained=null",
        f"data.synthetic.image_size={image_size}",
    ]  # fmt: skip
    items += [f"data.synthetic.{key}={value}" for key, value in spec.items()]
    return items + setting("batch", dry)


def run_suite(args: argparse.Namespace, out: Path, log: dict) -> None:
    dry = args.dry_run
    size = 128 if dry else 256
    suite_args = [
        "--device", "cpu" if dry else "cuda",
        "--out", str(out / "suite"),
        "--results", str(out / "results.md"),
        "--sections", "clustering", "training", "evaluation", "dictionary",
        "--sizes", *map(str, setting("sizes", dry)),
        "--features", *setting("features", dry),
        "--threads", *map(str, setting("threads", dry)),
        "--dense-max-n", str(setting("dense_max_n", dry)),
        "--cpu-reference-max-n", str(setting("cpu_reference_max_n", dry)),
        "--dictionary-sizes", *map(str, setting("dictionary_sizes", dry)),
        "--eval-size", *map(str, setting("eval_size", dry)),
        "--train-config", setting("train_config", dry),
        "--train-steps", str(setting("train_steps", dry)),
        "--train-set", *synthetic_overrides(out, dry, size),
        "--note", "gpu_check" + (" --dry-run (CPU, toy sizes)" if dry else ""),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(BENCH / "suite.py"), *suite_args], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    (out / "suite.log").write_text(done.stdout + done.stderr)
    log["suite"] = {"returncode": done.returncode, "seconds": time.perf_counter() - start}


def run_epoch(args: argparse.Namespace, out: Path, log: dict) -> None:
    """One epoch of the real loop on the engine (bench_epoch), its figures as JSON."""
    dry = args.dry_run
    size = 128 if dry else 256
    command = [
        sys.executable, str(BENCH / "bench_epoch.py"),
        "--config", setting("train_config", dry),
        "--iters", str(setting("epoch_iters", dry)),
        "--device", "cpu" if dry else "cuda",
        "--out", str(out / "epoch.json"),
        "--set", *synthetic_overrides(out, dry, size),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (out / "epoch.log").write_text(done.stdout + done.stderr)
    log["epoch"] = {"returncode": done.returncode, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        download_wheels(args.download_wheels)
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    install_missing(Path(args.wheels), log)
    import torch

    log["torch"] = torch.__version__
    log["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a CPU machine")
    steps = [("tests", run_gpu_tests), ("suite", run_suite), ("epoch", run_epoch)]
    for name, step in steps:
        if name in args.skip:
            continue
        if name == "tests":
            step(out, log)
        else:
            step(args, out, log)
        (out / "gpu_check.json").write_text(json.dumps(log, indent=2))
    log["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "gpu_check.json").write_text(json.dumps(log, indent=2))
    failed = [k for k in ("gpu_tests", "suite", "epoch") if log.get(k, {}).get("returncode")]
    print(json.dumps(log, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
