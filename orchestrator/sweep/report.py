"""The sweep's summary: one row per grid point, as a table (markdown, CSV, console) and
comparison plots."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.table import Table

from orchestrator.sweep.grid import GridPoint, format_value, slugify

logger = logging.getLogger(__name__)

TABLE_METRICS = ("mAP", "R1", "R5", "R10")


@dataclass
class SummaryRow:
    """One grid point's line of the sweep table; metrics in percent, None when missing."""

    point: GridPoint
    epoch: int | None
    epochs: int
    metrics: dict[str, float | None]
    status: str
    best: bool = False

    @property
    def complete(self) -> bool:
        return self.epoch == self.epochs and self.metrics.get("mAP") is not None


def summary_rows(
    grid: Sequence[GridPoint],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    epochs: Mapping[str, int],
    errors: Mapping[str, str],
    metric: str = "mAP",
) -> list[SummaryRow]:
    """One row per grid point from its evaluation history (fractions, as logged): the last
    evaluated epoch's metrics x 100. The best complete row by ``metric`` is marked."""
    rows = []
    for point in grid:
        history = histories.get(point.slug) or []
        last = history[-1] if history else {}
        epoch = int(last["epoch"]) if "epoch" in last else None
        values = {key: (100.0 * last[key] if key in last else None) for key in TABLE_METRICS}
        if point.slug in errors:
            status = f"failed: {errors[point.slug]}"
        elif epoch is None:
            status = "no result"
        elif epoch < epochs[point.slug]:
            status = f"stopped at epoch {epoch}"
        else:
            status = "finished"
        rows.append(SummaryRow(point, epoch, epochs[point.slug], values, status))
    best = best_row_index(rows, metric)
    if best is not None:
        rows[best].best = True
    return rows


def best_row_index(rows: Sequence[SummaryRow], metric: str = "mAP") -> int | None:
    """Index of the complete row with the highest ``metric`` (first on ties), None if none."""
    scored = [(row.metrics[metric], -i) for i, row in enumerate(rows) if row.complete]
    return -max(scored)[1] if scored else None


def table_records(rows: Sequence[SummaryRow], columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows as text cells: point, the axis values, epoch, metrics (1 decimal), best, status."""
    records = []
    for row in rows:
        record = {"point": row.point.name}
        record.update(
            {column: format_value(row.point.overrides.get(column, "")) for column in columns}
        )
        record["epoch"] = "-" if row.epoch is None else f"{row.epoch}/{row.epochs}"
        record.update({key: "-" if v is None else f"{v:.1f}" for key, v in row.metrics.items()})
        record["best"] = "*" if row.best else ""
        record["status"] = row.status
        records.append(record)
    return records


def table_markdown(rows: Sequence[SummaryRow], columns: Sequence[str], title: str) -> str:
    """The paper-style table: metrics in percent at the final epoch, best row bold and starred."""
    records = table_records(rows, columns)
    header = ["point", *columns, "epoch", *TABLE_METRICS, "best", "status"]
    lines = [
        f"# {title}",
        "",
        "mAP and Rank-k in percent at the last evaluated epoch; * marks the best mAP.",
        "",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append(
        "|"
        + "|".join("---:" if h in TABLE_METRICS or h == "epoch" else "---" for h in header)
        + "|"
    )
    for row, record in zip(rows, records):
        cells = [record[h] for h in header]
        if row.best:
            cells = [
                f"**{c}**" if c and h not in ("best", "status") else c
                for h, c in zip(header, cells)
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table_csv(rows: Sequence[SummaryRow], columns: Sequence[str], path: Path) -> Path:
    """CSV with full-precision percent metrics (empty when missing) and best as 1/0."""
    header = ["point", *columns, "epoch", "epochs", *TABLE_METRICS, "best", "status"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [
                    row.point.name,
                    *(format_value(row.point.overrides.get(c, "")) for c in columns),
                    "" if row.epoch is None else row.epoch,
                    row.epochs,
                    *(
                        "" if row.metrics[k] is None else f"{row.metrics[k]:.4f}"
                        for k in TABLE_METRICS
                    ),
                    int(row.best),
                    row.status,
                ]
            )
    return path


def rich_summary_table(rows: Sequence[SummaryRow], columns: Sequence[str], title: str) -> Table:

    table = Table(title=title)
    header = ["point", *columns, "epoch", *TABLE_METRICS, "best", "status"]
    for name in header:
        table.add_column(name, justify="right" if name in TABLE_METRICS else "left")
    for row, record in zip(rows, table_records(rows, columns)):
        table.add_row(*(record[h] for h in header), style="bold green" if row.best else None)
    return table


def plot_metric_curves(
    grid: Sequence[GridPoint],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: Path,
    metric: str = "mAP",
) -> Path:
    """``metric`` (percent) against epoch, one line per grid point."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for point in grid:
        history = histories.get(point.slug) or []
        if history:
            axes.plot(
                [h["epoch"] for h in history],
                [100 * h[metric] for h in history],
                marker="o",
                label=point.name,
            )
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"{metric} (%)")
    axes.set_title(f"{metric} per epoch")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_bars(
    labels: Sequence[str], values: Mapping[str, Sequence[float]], title: str, path: Path
) -> Path:
    """Grouped bars: one group per label, one bar per metric (percent)."""
    figure = Figure(figsize=(max(5.0, 1.2 * len(labels) + 2), 4.5))
    axes = figure.subplots()
    width = 0.8 / max(1, len(values))
    for i, (metric, heights) in enumerate(values.items()):
        positions = [x + (i - (len(values) - 1) / 2) * width for x in range(len(labels))]
        bars = axes.bar(positions, heights, width, label=metric)
        axes.bar_label(bars, fmt="%.1f", fontsize="x-small")
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_ylabel("%")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def axis_means(
    rows: Sequence[SummaryRow], column: str, metrics: Sequence[str]
) -> tuple[list[str], dict[str, list[float]]]:
    """Each value of ``column`` (first-seen order) -> the mean of ``metrics`` over the
    complete rows holding it: the axis' marginal effect when the grid has other axes."""
    groups: dict[str, list[SummaryRow]] = {}
    for row in rows:
        if row.complete:
            groups.setdefault(format_value(row.point.overrides.get(column, "")), []).append(row)
    labels = list(groups)
    means = {
        m: [sum(r.metrics[m] for r in groups[label]) / len(groups[label]) for label in labels]
        for m in metrics
    }
    return labels, means


def write_summary(
    rows: Sequence[SummaryRow],
    grid: Sequence[GridPoint],
    columns: Sequence[str],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    directory: Path,
    title: str,
    per_point_bars: bool,
) -> list[Path]:
    """table.md, table.csv, mAP_per_epoch.png and bar charts (per parameter column; per
    point when the grid has named points) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.md").write_text(table_markdown(rows, columns, title))
    paths = [directory / "table.md", write_table_csv(rows, columns, directory / "table.csv")]
    paths.append(plot_metric_curves(grid, histories, directory / "mAP_per_epoch.png"))
    bar_metrics = ("mAP", "R1")
    if per_point_bars:
        done = [row for row in rows if row.complete]
        if done:
            heights = {m: [row.metrics[m] for row in done] for m in bar_metrics}
            paths.append(
                plot_bars(
                    [r.point.name for r in done],
                    heights,
                    "final epoch per point",
                    directory / "bars_point.png",
                )
            )
    for column in columns:
        labels, means = axis_means(rows, column, bar_metrics)
        if len(labels) >= 2:
            path = directory / f"bars_{slugify(column)}.png"
            bar_title = f"final epoch by {column}" + (
                " (mean over the other columns)" if len(columns) > 1 else ""
            )
            paths.append(plot_bars(labels, means, bar_title, path))
    return paths
