"""``viewcoop evaluate`` and ``viewcoop figures``: a finished checkpoint's numbers and the
paper's Fig. 4, 5, 6."""

from __future__ import annotations

import argparse

from orchestrator.console import console, results_table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from orchestrator.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, root=args.root, overrides=args.overrides
    )
    console.print(
        results_table(f"evaluation of {args.checkpoint}", [metrics], ("mAP", "R1", "R5", "R10"))
    )
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from viewcoop_core.figures.runs import make_figures

    checkpoints = [tuple(item.split("=", 1)) if "=" in item else item for item in args.checkpoint]
    target = (
        checkpoints[0] if len(checkpoints) == 1 and isinstance(checkpoints[0], str) else checkpoints
    )
    paths = make_figures(target, args.out, num_images=args.num_images, max_samples=args.max_samples)
    for name, path in paths.items():
        console.print(f"{name:24s} {path}")
    return 0


def register(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="mAP / CMC of a checkpoint's image encoder")
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint folder or its state.pt")
    evaluate.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    evaluate.add_argument("--root", help="dataset root (default: the one it was trained on)")
    evaluate.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. data.vehicleid_test_size=800"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    figs = sub.add_parser(
        "figures", help="the paper's Fig. 4, 5, 6 for a checkpoint (or LABEL=CHECKPOINT ...)"
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
