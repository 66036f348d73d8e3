"""viewcoop evaluate and viewcoop figures: a finished checkpoint's numbers and the
paper's Fig. 4, 5, 6."""

from __future__ import annotations

import argparse

from orchestrator.commands import add_command
from orchestrator.console import say, shown_path


def cmd_evaluate(args: argparse.Namespace) -> int:
    from orchestrator.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, root=args.root, overrides=args.overrides
    )
    from viewcoop_core.engine.results import RESULT_METRICS, text_table

    say(f"evaluation of {args.checkpoint} (in %)")
    say(text_table([metrics], RESULT_METRICS))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from viewcoop_core.figures.runs import make_figures

    checkpoints = [tuple(item.split("=", 1)) if "=" in item else item for item in args.checkpoint]
    target = (
        checkpoints[0] if len(checkpoints) == 1 and isinstance(checkpoints[0], str) else checkpoints
    )
    paths = make_figures(target, args.out, num_images=args.num_images, max_samples=args.max_samples)
    for name, path in paths.items():
        say(f"{name:24s} {shown_path(path)}")
    return 0


def register(sub) -> None:
    evaluate = add_command(
        sub,
        "evaluate",
        "mAP / CMC of a checkpoint's image encoder",
        "Evaluates a checkpoint's image encoder on the test protocol of the dataset it was\n"
        "trained on (or another one) and prints mAP, Rank-1, Rank-5 and Rank-10.",
        "viewcoop evaluate --checkpoint runs/my-run/checkpoint_2026-12-01_13-35-02.371234",
    )
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint folder or its state.pt")
    evaluate.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    evaluate.add_argument("--root", help="dataset root (default: the one it was trained on)")
    evaluate.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. data.vehicleid_test_size=800"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    figs = add_command(
        sub,
        "figures",
        "the paper's Fig. 4, 5, 6 for one or several checkpoints",
        "Draws the paper's Fig. 4 (distance distributions), Fig. 5 (image-text\n"
        "discrepancy) and Fig. 6 (patch correlation) for one checkpoint, or compares\n"
        "several given as LABEL=CHECKPOINT, and writes the PNGs and figures.json to --out.",
        "viewcoop figures --checkpoint runs/my-run/checkpoint_2026-12-01_13-35-02.371234 --out figs",
    )
    figs.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help="checkpoint folder(s); LABEL=PATH to compare runs",
    )
    figs.add_argument("--out", required=True, help="output folder for the PNGs and figures.json")
    figs.add_argument("--num-images", type=int, default=6, help="query images in Fig. 6")
    figs.add_argument(
        "--max-samples", type=int, default=5000, help="gallery images sampled for Fig. 4/5"
    )
    figs.set_defaults(func=cmd_figures)
