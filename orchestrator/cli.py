"""The ``viewcoop`` command: train, sweep, evaluate, figures, demo, make-synthetic."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from workers.tracking import HISTORY_COLUMNS, format_metric

logger = logging.getLogger("viewcoop")
console = Console()

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
DEMO_CONFIG = EXPERIMENTS_DIR / "demo.yaml"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("urllib3", "alembic", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def results_table(title: str, rows: list[dict[str, float]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(format_metric(column, row.get(column)) for column in columns))
    return table


def print_training_outcome(outcome) -> None:
    from orchestrator.train import tracking_ui_hint

    title = f"{outcome.run_name}: evaluation (mAP, Rank-k, ARI in %)"
    console.print(results_table(title, outcome.history, ("epoch",) + HISTORY_COLUMNS))
    console.print(f"run directory: {outcome.run_dir}")
    if outcome.checkpoint_path:
        console.print(f"checkpoint:    {outcome.checkpoint_path}")
    console.print(f"MLflow run:    {outcome.mlflow_run_id}")
    console.print(
        f"open the dashboard with:\n  {tracking_ui_hint(outcome.tracking_uri)}\nthen browse http://127.0.0.1:5000"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.train import run_training

    cfg = load_config(args.config, args.overrides, profile=args.profile)
    outcome = run_training(cfg, run_name=args.run_name, num_cpus=args.num_cpus)
    print_training_outcome(outcome)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.train import run_training

    cfg = load_config(DEMO_CONFIG, args.overrides)
    console.print(
        "[bold]ViewCoOp demo[/bold]: synthetic multi-view vehicles, tiny CLIP, full method "
        f"(prompt={cfg.prompt.variant}, losses={'+'.join(cfg.loss.terms)}, tau={cfg.graph.tau}), "
        f"{cfg.ray.num_workers} Ray Train workers, {cfg.train.epochs} epochs"
    )
    outcome = run_training(cfg, run_name=args.run_name, num_cpus=args.num_cpus)
    print_training_outcome(outcome)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep import parse_grid_options, rich_summary_table, run_sweep
    from orchestrator.train import tracking_ui_hint

    outcome = run_sweep(
        args.config,
        args.overrides,
        profile=args.profile,
        grid_axes=parse_grid_options(args.grid or []),
        name=args.name,
        resume=args.resume,
        num_cpus=args.num_cpus,
        max_concurrent=args.max_concurrent,
    )
    title = f"sweep {outcome.name} (mAP / Rank-k in % at the last epoch, * = best mAP)"
    console.print(rich_summary_table(outcome.rows, outcome.columns, title))
    console.print(f"sweep folder:      {outcome.sweep_dir}")
    console.print(
        f"MLflow parent run: {outcome.parent_run_id} (table and plots under its 'summary' artifacts)"
    )
    console.print(f"open the dashboard with:\n  {tracking_ui_hint(outcome.tracking_uri)}")
    if outcome.incomplete:
        console.print(
            f"[red]{len(outcome.incomplete)} point(s) unfinished[/red]: {', '.join(outcome.incomplete)} "
            "(failed or interrupted); continue with the same command plus --resume (finished points are kept)"
        )
        return 1
    return 0


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
    from workers.figures import make_figures

    checkpoints = [tuple(item.split("=", 1)) if "=" in item else item for item in args.checkpoint]
    target = (
        checkpoints[0] if len(checkpoints) == 1 and isinstance(checkpoints[0], str) else checkpoints
    )
    paths = make_figures(target, args.out, num_images=args.num_images, max_samples=args.max_samples)
    for name, path in paths.items():
        console.print(f"{name:24s} {path}")
    return 0


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from viewcoop_core.data.synthetic import make_synthetic

    summary = make_synthetic(
        args.out,
        num_ids=args.ids,
        num_cameras=args.cameras,
        seed=args.seed,
        images_per_camera=args.images_per_camera,
        image_size=(args.image_size, args.image_size),
        camera_looks=args.camera_looks,
    )
    console.print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="viewcoop", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train one configuration on Ray (resumes a run of the same name)"
    )
    train.add_argument("config", help="YAML file, e.g. experiments/veri776_vitb16.yaml")
    train.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 graph.tau=[2]"
    )
    train.add_argument("--profile", help="a profile of the YAML file, e.g. smoke")
    train.add_argument("--run-name", help="name of the run (re-use it to resume)")
    train.add_argument(
        "--num-cpus", type=int, help="CPUs of a local Ray instance (ignored with ray.address)"
    )
    train.set_defaults(func=cmd_train)

    demo = sub.add_parser("demo", help="synthetic data, tiny CLIP, full method on local Ray (CPU)")
    demo.add_argument("overrides", nargs="*", help="dotted overrides of experiments/demo.yaml")
    demo.add_argument("--run-name", help="name of the run (re-use it to resume)")
    demo.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    demo.set_defaults(func=cmd_demo)

    sweep = sub.add_parser(
        "sweep", help="Ray Tune sweep of whole trainings over the file's sweep grid"
    )
    sweep.add_argument(
        "config", help="YAML file with a sweep: section, e.g. experiments/table3_tau.yaml"
    )
    sweep.add_argument(
        "overrides", nargs="*", help="dotted overrides for every trial, e.g. train.epochs=10"
    )
    sweep.add_argument("--profile", help="a profile of the YAML file, e.g. smoke")
    sweep.add_argument(
        "--name",
        help="sweep name: its folder under ray.storage_path and MLflow parent run "
        "(default: the file's stem, plus -PROFILE)",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        metavar="KEY=LIST",
        help="an extra or replacing grid axis, e.g. --grid \"graph.tau=['1', '1or2']\" (repeatable)",
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep of this name: finished trials kept, failed ones rerun",
    )
    sweep.add_argument(
        "--num-cpus", type=int, help="CPUs of a local Ray instance (ignored with ray.address)"
    )
    sweep.add_argument("--max-concurrent", type=int, help="run at most this many trials at a time")
    sweep.set_defaults(func=cmd_sweep)

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

    synth = sub.add_parser("make-synthetic", help="draw the synthetic multi-view vehicle set")
    synth.add_argument("--out", required=True, help="output folder (VeRi-776 layout + masks/)")
    synth.add_argument("--ids", type=int, default=40, help="number of vehicle identities")
    synth.add_argument("--cameras", type=int, default=6, help="number of cameras")
    synth.add_argument(
        "--images-per-camera", type=int, default=2, help="images per identity and camera"
    )
    synth.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--camera-looks",
        type=int,
        default=None,
        help="cameras share this many looks (light, background, blur); default: one per camera",
    )
    synth.set_defaults(func=cmd_make_synthetic)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`train cfg.yaml --run-name x a.b=1`): argparse leaves
    # positionals after an option unparsed, so collect the key=value ones here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
