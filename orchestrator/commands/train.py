"""``viewcoop train`` and ``viewcoop demo``: one configuration on Ray, to the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.console import console, results_table

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
DEMO_CONFIG = EXPERIMENTS_DIR / "demo.yaml"


def print_training_outcome(outcome) -> None:
    from orchestrator.train import tracking_ui_hint
    from viewcoop_core.engine.results import HISTORY_COLUMNS

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
    from orchestrator.prepare import prepare_run

    cfg = load_config(args.config, args.overrides, profile=args.profile)
    # Config, data and run folder are checked before Ray, MLflow and torch are imported.
    prepared = prepare_run(cfg, run_name=args.run_name)
    from orchestrator.train import run_prepared

    outcome = run_prepared(prepared, num_cpus=args.num_cpus)
    print_training_outcome(outcome)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.prepare import prepare_run

    cfg = load_config(DEMO_CONFIG, args.overrides)
    console.print(
        "[bold]ViewCoOp demo[/bold]: synthetic multi-view vehicles, tiny CLIP, full method "
        f"(prompt={cfg.prompt.variant}, losses={'+'.join(cfg.loss.terms)}, tau={cfg.graph.tau}), "
        f"{cfg.ray.num_workers} Ray Train workers, {cfg.train.epochs} epochs"
    )
    prepared = prepare_run(cfg, run_name=args.run_name)
    from orchestrator.train import run_prepared

    outcome = run_prepared(prepared, num_cpus=args.num_cpus)
    print_training_outcome(outcome)
    return 0


def register(sub) -> None:
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
