"""viewcoop train and viewcoop demo: one configuration on Ray, to the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands import add_command
from orchestrator.console import console, say, shown_path

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
DEMO_CONFIG = EXPERIMENTS_DIR / "demo.yaml"


def print_training_outcome(outcome) -> None:
    """The results table, where the run's files are and the two commands that show it again."""
    from orchestrator.dashboard import ui_command
    from viewcoop_core.engine.results import history_text

    say()
    say(f"{outcome.run_name}: evaluation (mAP, Rank-k, ARI in %; epoch 0 = before training)")
    say(history_text(outcome.history))
    say(f"run folder:  {shown_path(outcome.run_dir)}")
    if outcome.checkpoint_path:
        say(f"checkpoint:  {shown_path(outcome.checkpoint_path)}")
    say(f"MLflow run:  {outcome.mlflow_run_id}")
    say(f"dashboard:   {ui_command(outcome.tracking_uri)}")
    say(f"this again:  viewcoop show {shown_path(outcome.run_dir)}")


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
        f"(prompt {cfg.prompt.variant}, losses {'+'.join(cfg.loss.terms)}, tau {cfg.graph.tau}), "
        f"{cfg.ray.num_workers} Ray Train workers, {cfg.train.epochs} epochs",
        highlight=False,
    )
    prepared = prepare_run(cfg, run_name=args.run_name)
    from orchestrator.train import run_prepared

    outcome = run_prepared(prepared, num_cpus=args.num_cpus)
    print_training_outcome(outcome)
    return 0


def register(sub) -> None:
    train = add_command(
        sub,
        "train",
        "train one configuration on Ray (the same --run-name resumes)",
        "Trains the configuration of a YAML file (plus dotted overrides) on Ray: a local\n"
        "instance, or the cluster named by ray.address. Re-running with the same\n"
        "--run-name resumes that run from its last checkpoint.",
        "viewcoop train experiments/demo.yaml train.epochs=3 --run-name my-run",
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

    demo = add_command(
        sub,
        "demo",
        "the full method on synthetic vehicles, on local Ray (CPU)",
        "Draws the synthetic multi-view vehicles (once), trains the tiny CLIP with the\n"
        "full method (ViewCoOp prompts + cross-modal mutual graph) on 2 Ray Train workers\n"
        "and prints the results table. Runs are logged to MLflow under runs/.",
        "viewcoop demo train.epochs=2",
    )
    demo.add_argument("overrides", nargs="*", help="dotted overrides of experiments/demo.yaml")
    demo.add_argument("--run-name", help="name of the run (re-use it to resume)")
    demo.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    demo.set_defaults(func=cmd_demo)
