"""viewcoop sweep: a Ray Tune sweep of whole trainings over a config's grid."""

from __future__ import annotations

import argparse

from orchestrator.commands import add_command
from orchestrator.console import console, say, shown_path


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.dashboard import ui_command
    from orchestrator.sweep.grid import parse_grid_options
    from orchestrator.sweep.plan import plan_sweep

    # Every point, the data and the folder are checked before Ray and MLflow are imported.
    draft = plan_sweep(
        args.config,
        args.overrides,
        profile=args.profile,
        grid_axes=parse_grid_options(args.grid or []),
        name=args.name,
        resume=args.resume,
        seeds=args.seeds,
    )
    from orchestrator.sweep.report import rich_summary_table
    from orchestrator.sweep.run import execute_sweep
    from orchestrator.sweep.seeds import seed_table_markdown

    outcome = execute_sweep(draft, num_cpus=args.num_cpus, max_concurrent=args.max_concurrent)
    title = f"sweep {outcome.name} (mAP / Rank-k in % at the last epoch, * = best mAP)"
    console.print(rich_summary_table(outcome.rows, outcome.columns, title))
    if outcome.seed_rows:
        console.print(seed_table_markdown(outcome.seed_rows, outcome.columns, outcome.name))
    say(f"sweep folder:       {shown_path(outcome.sweep_dir)}")
    say(f"MLflow parent run:  {outcome.parent_run_id} (table and plots: its 'summary' artifacts)")
    say(f"dashboard:          {ui_command(outcome.tracking_uri)}")
    if outcome.incomplete:
        console.print(
            f"[red]{len(outcome.incomplete)} point(s) unfinished[/red]: {', '.join(outcome.incomplete)} "
            "(failed or interrupted); continue with the same command plus --resume (finished points are kept)"
        )
        return 1
    return 0


def register(sub) -> None:
    sweep = add_command(
        sub,
        "sweep",
        "Ray Tune sweep of whole trainings over the file's sweep grid",
        "Runs one whole training per point of the YAML file's sweep: grid as Ray Tune\n"
        "trials, logs them as child runs of one MLflow parent run and prints the summary\n"
        "table. --resume continues an interrupted sweep of the same name.",
        "viewcoop sweep experiments/table3_tau.yaml --profile smoke --num-cpus 2",
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
    sweep.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="repeat every point with train.seed 0..N-1; adds a mean ± std table that marks "
        "differences beyond 2 std",
    )
    sweep.add_argument("--max-concurrent", type=int, help="run at most this many trials at a time")
    sweep.set_defaults(func=cmd_sweep)
