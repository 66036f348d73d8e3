"""The view parser's targets on synthetic vehicles, and the demo on predicted masks.

1. Draws a training set (seed 11, 24 cameras, each its own look) and an evaluation set
   of other vehicles and cameras (seed 12, 6 cameras, each its own look); the demo's set
   (seed 0) is neither.
2. Trains the parser on the training set's exact masks (bounded by --steps) and times it.
3. Evaluates it on the evaluation set: per-class IoU, mean IoU over the four views, mean
   absolute view-ratio error (patch 8/16/32 and pixel, masks resized to 128 and 256 px),
   with and without the mirror-image average.
4. Times ``parse-views predict`` (read, infer, write PNGs) on 128-px and 256-px images,
   with the mirror-image average (the default) and without (``--no-flip``).
5. With --demo: trains the demo twice, on the exact masks and on the parser's masks
   (``data.view_parser=<checkpoint>``), and prints both mAP histories and the difference.

    .venv/bin/python benchmarks/view_parser.py --out data/view-parser-bench
    .venv/bin/python benchmarks/view_parser.py --out data/view-parser-bench --demo  # + demo

Every step reuses what an earlier call left in --out (sets, checkpoint), so --demo can
follow a first call. Figures are printed and written to <out>/figures.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import time
from pathlib import Path

import torch

from viewcoop_core.outputs import owns
from viewcoop_core.synthetic import SyntheticSpec, ensure_synthetic
from viewcoop_core.viewparse.checkpoint import save_parser
from viewcoop_core.viewparse.evaluate import evaluate_parser
from viewcoop_core.viewparse.model import build_parser
from viewcoop_core.viewparse.predict import OUTPUT_KIND as PREDICT_KIND
from viewcoop_core.viewparse.predict import SOURCE_FILE as PREDICT_SOURCE
from viewcoop_core.viewparse.predict import predict_folder
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import train_parser
from viewcoop_core.viewparse.train_parallel import resolve_processes

# 3,000 annotated pairs, the size of PVEN's annotated VeRi subset.
TRAIN_SPEC = SyntheticSpec(num_ids=125, num_cameras=24, images_per_camera=1, seed=11)
EVAL_SPEC = SyntheticSpec(num_ids=20, num_cameras=6, images_per_camera=2, seed=12)
SPLITS = ("image_train", "image_test")
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data/view-parser-bench")
    parser.add_argument("--steps", type=int, default=TrainSettings().steps)
    parser.add_argument("--batch-size", type=int, default=TrainSettings().batch_size)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--processes", default="auto", help="CPU processes splitting each batch (auto: per thread)"
    )
    parser.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    parser.add_argument("--demo", action="store_true", help="also compare the demo on both masks")
    parser.add_argument("--demo-overrides", nargs="*", default=[], help="dotted overrides")
    return parser.parse_args()


def train_step(out: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    train_root = out / "train-set"
    ensure_synthetic(train_root, TRAIN_SPEC)
    checkpoint = out / "parser.pt"
    if checkpoint.is_file() and not args.retrain:
        return checkpoint, {"reused": str(checkpoint)}
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size)
    processes = resolve_processes(args.processes, torch.device("cpu"), settings.batch_size)
    wall = time.perf_counter()
    record = train_parser(
        [train_root / s for s in SPLITS],
        train_root / "masks",
        checkpoint,
        ParserSpec(),
        settings,
        processes=processes,
    )
    timing = {
        "train_wall_s": round(time.perf_counter() - wall, 1),
        "pairs": record["num_pairs"],
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "processes": processes,
        "final_loss": round(record["loss_history"][-1], 4),
    }
    return checkpoint, timing


def evaluation_step(out: Path, checkpoint: Path) -> dict:
    eval_root = out / "eval-set"
    ensure_synthetic(eval_root, EVAL_SPEC)
    images = [eval_root / s for s in SPLITS]
    figures = {}
    for size, flip in itertools.product((128, 256), (True, False)):
        scores = evaluate_parser(
            images, eval_root / "masks", checkpoint, ratio_image_size=size, flip=flip
        )
        name = f"ratios_at_{size}px{'' if flip else '_noflip'}"
        figures[name] = {k: round(v, 4) for k, v in scores.items()}
    return figures


def throughput_step(out: Path, checkpoint: Path) -> dict:
    """images/s of predict (read + infer + write) on 128-px and 256-px images, with and
    without the mirror-image average."""
    figures = {}
    big_checkpoint = out / "untrained-256.pt"
    save_parser(big_checkpoint, build_parser(ParserSpec(input_size=256)), {"untrained": True})
    runs = ((128, checkpoint), (256, checkpoint), (256, big_checkpoint))
    for (size, parser), flip in itertools.product(runs, (True, False)):
        root = out / f"speed-set-{size}"
        ensure_synthetic(root, EVAL_SPEC.replace(image_size=size, num_ids=8, seed=13))
        target = out / f"speed-masks-{size}-{parser.stem}{'' if flip else '-noflip'}"
        if owns(target, PREDICT_KIND):  # our own output of an earlier call: predict anew
            for stale in [*target.glob("*.png"), target / PREDICT_SOURCE]:
                stale.unlink(missing_ok=True)
        summary = predict_folder(
            [root / "image_train", root / "image_test"], parser, target, flip=flip
        )
        input_size = 256 if parser == big_checkpoint else 128
        name = f"{size}px_images_parser_input_{input_size}{'' if flip else '_noflip'}"
        figures[name] = round(summary.images_per_second, 1)
    return figures


def demo_step(checkpoint: Path, overrides: list[str]) -> dict:
    from orchestrator.config import load_config
    from orchestrator.train import run_training

    stamp = time.strftime("%Y%m%d-%H%M%S")
    histories = {}
    for label, extra in (("exact", []), ("parsed", [f"data.view_parser={checkpoint.resolve()}"])):
        cfg = load_config(DEMO_CONFIG, [*overrides, *extra])
        outcome = run_training(cfg, run_name=f"parser-{label}-{stamp}", num_cpus=2)
        histories[label] = [
            {"epoch": int(row["epoch"]), "mAP": round(100 * row.get("mAP", float("nan")), 2)}
            for row in outcome.history
        ]
    final = {label: rows[-1]["mAP"] for label, rows in histories.items()}
    return {
        "histories": histories,
        "final_mAP": final,
        "parsed_minus_exact": round(final["parsed"] - final["exact"], 2),
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, training = train_step(out, args)
    figures = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    figures["training"] = training
    figures["evaluation"] = evaluation_step(out, checkpoint)
    figures["predict_images_per_s"] = throughput_step(out, checkpoint)
    if args.demo:
        figures["demo"] = demo_step(checkpoint, args.demo_overrides)
    print(json.dumps(figures, indent=2))
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
