"""Sweep results with the pseudo-label diagnostics beside them, as markdown.

The sweep's own summary (``summary/table.md`` on the parent run) gives mAP and Rank-k.
This report reads the same MLflow store and adds, per grid point: mAP before training
(epoch 0), the ARI of the image and text pseudo-labels against the true ids, the k-NN
identity precision (k = 10) of the image and text features (``engine/diagnostics.py``) and the
precision / recall of the mutual-graph edges at the point's tau, all at the last
epoch's clustering. A sweep run with ``--seeds N`` (a ``train.seed`` axis) has one
row per point, each cell ``mean ± std`` over its seeds (sample std), and the point's mAP
difference to the best point, marked ``> 2 std`` when it exceeds twice the pooled std;
``--average`` pools the seeds of several sweeps of the same grid the same way. It is
what the README's synthetic benchmark tables are made of:

    python benchmarks/sweep_report.py --tracking-uri sqlite:///runs/mlflow.db \
        --experiment viewcoop-synthetic-bench --sweeps table1_modules-bench
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence

import numpy as np
from mlflow.tracking import MlflowClient

from orchestrator.sweep.seeds import SEED_KEY, cell, mean_std
from viewcoop_core.graph import tau_name

# Report column -> the MLflow metric it shows (fractions, shown in percent).
LAST_EPOCH_METRICS = {
    "mAP": "mAP",
    "R1": "R1",
    "R5": "R5",
    "R10": "R10",
    "img ARI": "img_ari",
    "txt ARI": "txt_ari",
    "img kNN": "knn_prec_img",
    "txt kNN": "knn_prec_txt",
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
        "--average", nargs="+", help="sweeps of one grid: their seeds pooled in one table"
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


def sweep_rows(client: MlflowClient, experiment_id: str, parent) -> dict[str, list[dict]]:
    """Point (its overrides without the seed) -> the figures of each of its seeds' runs
    (empty dicts for points without a run), in sweep order."""
    name = parent.data.params["sweep.name"]
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {run.info.run_name: run for run in children}
    rows: dict[str, list[dict]] = {}
    for key, overrides in parent.data.params.items():
        if not key.startswith("sweep.point."):
            continue
        run = by_name.get(f"{name}-{key.removeprefix('sweep.point.')}")
        point = ", ".join(p for p in overrides.split(", ") if not p.startswith(f"{SEED_KEY}="))
        rows.setdefault(point or "default", []).append(
            point_row(client, run) if run is not None else {}
        )
    return rows


def stat_cell(values: Sequence[float | None]) -> str:
    """``mean ± std`` over the seeds that have the figure; "-" when none has it."""
    mean, std = mean_std([v for v in values if v is not None])
    return cell(mean, std)


def markdown_table(title: str, runs: Sequence[dict[str, list[dict]]]) -> str:
    """One table over one or more sweeps of the same grid (seeds pooled per point)."""
    pooled: dict[str, list[dict]] = {}
    for rows in runs:
        for point, seeds in rows.items():
            pooled.setdefault(point, []).extend(seeds)
    maps = {
        p: [r.get("mAP") for r in seeds if r.get("mAP") is not None] for p, seeds in pooled.items()
    }
    best = max((p for p in maps if maps[p]), key=lambda p: np.mean(maps[p]), default=None)
    header = [*COLUMNS, "seeds", "mAP vs best"]
    lines = [
        f"**{title}** (mean ± std over seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for point, seeds in pooled.items():
        cells = [point] + [stat_cell([r.get(column) for r in seeds]) for column in COLUMNS[1:]]
        cells.append(str(len(maps[point])))
        cells.append(versus_best(maps[point], maps[best]) if best and point != best else "best")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def versus_best(values: Sequence[float], best: Sequence[float]) -> str:
    """The mAP difference to the best point, marked by the 2-std rule when both have 2+ seeds."""
    if not values:
        return "-"
    delta = float(np.mean(values) - np.mean(best))
    if len(values) < 2 or len(best) < 2:
        return f"{delta:+.1f}"
    pooled = np.sqrt((np.var(values, ddof=1) + np.var(best, ddof=1)) / 2)
    return f"{delta:+.1f}" + (" (> 2 std)" if abs(delta) > 2 * pooled else " (within 2 std)")


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
        title = " + ".join(names)
        print(markdown_table(title, list(tables.values())))  # noqa: T201 - a report
        return
    for name, rows in tables.items():
        print(markdown_table(name, [rows]))  # noqa: T201 - a report


if __name__ == "__main__":
    main()
