"""viewcoop ui and viewcoop show: finished runs, from MLflow."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from orchestrator.commands import add_command
from orchestrator.console import say, shown_path

logger = logging.getLogger(__name__)


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.dashboard import resolve_store, run_record, serve_ui, sqlite_file

    store = resolve_store(args.store)
    if store.tracking_uri.startswith(("http://", "https://")):
        say(f"that store is an MLflow server already: open {store.tracking_uri}")
        return 0
    db = sqlite_file(store.tracking_uri)
    logger.info("starting the MLflow UI for %s", shown_path(db) if db else store.tracking_uri)
    # `kill` ends the UI as Ctrl+C does: the server goes down with this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with serve_ui(store.tracking_uri, args.port) as (url, process):
        say(f"MLflow UI: {url}  (Ctrl+C stops it)")
        if store.run_name:
            record = run_record(store)
            page = f"#/experiments/{record.experiment_id}/runs/{record.run_id}"
            # MLflow 3 opens a page in its GenAI layout unless the link asks for this one.
            say(f"run {record.name}: {url}/{page}?workflowType=machine_learning")
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from orchestrator.dashboard import resolve_store, run_record
    from viewcoop_core.engine.results import history_text

    run = args.run
    store = resolve_store(run if Path(run).is_dir() else args.store)
    record = run_record(store, None if Path(run).is_dir() else run)
    took = "" if record.ended is None else f", took {duration(record.ended - record.started)}"
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started))
    say(
        f"{record.name}: {record.status} (experiment {record.experiment}, MLflow run {record.run_id})"
    )
    say(f"started {started}{took}")
    say()
    say("evaluation (mAP, Rank-k, ARI in %; epoch 0 = before training)")
    say(history_text(record.history) if record.history else "no evaluation logged\n")
    say("figures:")
    for path in record.figures or ["none logged"]:
        say("  " + (path if "://" in path else shown_path(path)))
    say()
    say("config:")
    say("  " + record.config_text.rstrip().replace("\n", "\n  "))
    return 0


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def register(sub) -> None:
    ui = add_command(
        sub,
        "ui",
        "open the MLflow UI on a store of runs (on 127.0.0.1)",
        "Starts MLflow's UI for the runs of STORE on 127.0.0.1, on port 5000 when it is\n"
        "free and else on a free port, and prints its address. STORE is a storage folder\n"
        "(runs/, holding mlflow.db), a run folder (its run's page is printed too), an\n"
        "mlflow.db file or a tracking URI; by default $MLFLOW_TRACKING_URI, else runs/.\n"
        "Ctrl+C stops it.",
        "viewcoop ui runs",
    )
    ui.add_argument(
        "store", nargs="?", metavar="STORE", help="storage folder, run folder, .db file or URI"
    )
    ui.add_argument("--port", type=int, default=0, help="port (default: 5000 if free, else any)")
    ui.set_defaults(func=cmd_ui)

    show = add_command(
        sub,
        "show",
        "a finished run's results, figures and config, from MLflow",
        "Prints a run's results table (mAP, Rank-k, cluster counts, ARI per epoch), the\n"
        "paths of its figures and its resolved config, all read from MLflow, so it works\n"
        "for runs that ended long ago. RUN is a run folder, a run name or an MLflow run id.",
        "viewcoop show demo-20261201-133048",
    )
    show.add_argument("run", metavar="RUN", help="run folder, run name or MLflow run id")
    show.add_argument(
        "--store",
        help="where to look for a run name or id (default: $MLFLOW_TRACKING_URI, else runs/)",
    )
    show.set_defaults(func=cmd_show)
