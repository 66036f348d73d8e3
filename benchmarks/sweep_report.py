"""Sweep results with the pseudo-label diagnostics beside them, as markdown.

The sweep's own summary (``summary/table.md`` on the parent run) gives mAP and Rank-k.
This report reads the same MLflow store and adds, per grid point: mAP before training
(epoch 0), the ARI of the image and text pseudo-labels against the true ids and the
precision / recall of the mutual-graph edges at the point's tau, all at the last
epoch's clustering. Sweeps of the same grid run with different seeds are averaged
row by row with ``--average`` (cells read ``mean ± half the range``). It is what the
README's synthetic benchmark tables are made of:

    python benchmarks/sweep_report.py --tracking-uri sqlite:///runs/mlflow.db \
        --experiment viewcoop-synthetic-bench \
        --average table3_tau-bench table3_tau-bench-seed1
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence

import numpy as np
from mlflow.tracking import MlflowClient

from viewcoop_core.graph import tau_name

# Report column -> the MLflow metric it shows (fractions, shown in percent).
LAST_EPOCH_METRICS = {
    "mAP": "mAP",
    "R1": "R1",
    "R5": "R5",
    "R10": "R10",
    "img ARI": "img_ari",
    "txt ARI": "txt_ari",
}
COLUMNS = ("point", "mAP@0", *LAST_EPOCH_METRICS, "edge prec", "edge rec")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", default="sqlite:///runs/mlflow.db")
    parser.add_argument("--experiment", default="viewcoop-synthetic-bench")
    parser.add_argument("--sweeps", nargs="*", help="sweep names (default: every sweep there)")
    parser.add_argument(
        "--average", nargs="+", help="sweeps of one grid (e.g. two seeds): one averaged table"
    )
    return parser.parse_args(argv)


def latest_parents(client: MlflowClient, experiment_id: str) -> dict[str, object]:
    """Sweep name -> its most recent parent run."""
    parents: dict[str, object] = {}
    for run in client.search_runs([experiment_id], order_by=["attributes.start_time ASC"]):
        name = run.data.params.get("sweep.name")
        if name is not None:
            parents[name] = run
    return parents


def point_row(client: MlflowClient, run) -> dict[str, float | None]:
    """One child run's figures in percent: the last evaluated epoch's metrics and that
    epoch's clustering."""
    history = sorted(client.get_metric_history(run.info.run_id, "mAP"), key=lambda m: m.step)
    tau = tau_name(ast.literal_eval(run.data.params.get("graph.tau", "[1, 2]")))
    keys = {
        **LAST_EPOCH_METRICS,
        "edge prec": f"graph_precision_tau{tau}",
        "edge rec": f"graph_recall_tau{tau}",
    }
    last = run.data.metrics  # the latest value of each metric
    row = {column: 100 * last[key] if key in last else None for column, key in keys.items()}
    row["mAP@0"] = 100 * history[0].value if history and history[0].step == 0 else None
    return row


def sweep_rows(client: MlflowClient, experiment_id: str, parent) -> dict[str, dict]:
    """Grid point slug -> its figures (empty when the point has no run), in sweep order."""
    name = parent.data.params["sweep.name"]
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {run.info.run_name: run for run in children}
    slugs = [
        k.removeprefix("sweep.point.") for k in parent.data.params if k.startswith("sweep.point.")
    ]
    rows = {}
    for slug in slugs:
        run = by_name.get(f"{name}-{slug}")
        rows[slug] = point_row(client, run) if run is not None else {}
    return rows


def average_cell(values: Sequence[float | None]) -> str:
    """One cell over sweeps: the value, or ``mean ± half range``; "-" if any is missing."""
    if not values or any(v is None for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    spread = (max(values) - min(values)) / 2
    return f"{np.mean(values):.1f} ± {spread:.1f}"


def markdown_table(title: str, runs: Sequence[dict[str, dict]]) -> str:
    """One table over one or more sweeps of the same grid (rows matched by point slug)."""
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
    ]
    for slug in runs[0]:
        cells = [slug] + [
            average_cell([rows.get(slug, {}).get(column) for rows in runs])
            for column in COLUMNS[1:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {args.experiment!r} in {args.tracking_uri}")
    parents = latest_parents(client, experiment.experiment_id)
    names = args.average or args.sweeps or sorted(parents)
    missing = [n for n in names if n not in parents]
    if missing:
        raise SystemExit(
            f"no sweep named {missing} in {args.experiment!r}; there: {sorted(parents)}"
        )
    tables = {name: sweep_rows(client, experiment.experiment_id, parents[name]) for name in names}
    if args.average:
        title = " + ".join(names) + f" (mean ± half range of {len(names)})"
        print(markdown_table(title, list(tables.values())))  # noqa: T201 - a report
        return
    for name, rows in tables.items():
        print(markdown_table(name, [rows]))  # noqa: T201 - a report


if __name__ == "__main__":
    main()
