"""A run's results as tables: which metrics a row shows and how they are printed
(markdown for the run's ``results.md``, aligned plain text for a terminal)."""

from __future__ import annotations

from collections.abc import Mapping

RESULT_METRICS = ("mAP", "R1", "R5", "R10")
HISTORY_COLUMNS = RESULT_METRICS + ("img_clusters", "txt_clusters", "img_ari", "txt_ari")
EPOCH_LINE_METRICS = ("img_ari", "mAP", "R1")


def history_markdown(
    rows: list[dict[str, float]], columns: tuple[str, ...] = HISTORY_COLUMNS
) -> str:
    """The results table as markdown; rank metrics and ARI in percent."""
    header = ("epoch",) + columns
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(format_metric(key, row.get(key)) for key in header) + " |")
    return "\n".join(lines) + "\n"


def history_text(rows: list[dict[str, float]], columns: tuple[str, ...] = HISTORY_COLUMNS) -> str:
    """The results table as aligned plain text (about 75 columns with the default columns)."""
    return text_table(rows, ("epoch",) + columns)


def text_table(rows: list[dict[str, float]], header: tuple[str, ...]) -> str:
    """Rows as right-aligned plain text, two spaces between columns; each column as wide
    as its name or its widest cell, so names are never cut short."""
    cells = [[format_metric(key, row.get(key)) for key in header] for row in rows]
    widths = [max([len(name)] + [len(line[i]) for line in cells]) for i, name in enumerate(header)]
    lines = [header, *cells]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines) + "\n"


def format_metric(key: str, value: float | None) -> str:
    """Rank metrics and ARI in percent with one decimal, counts as plain numbers."""
    if value is None:
        return "-"
    if key in RESULT_METRICS or key.endswith("_ari"):
        return f"{100 * value:.1f}"
    return f"{value:g}"


def epoch_line(metrics: Mapping[str, float], epochs: int, seconds: float | None = None) -> str:
    """An epoch's key figures on one line, from what rank 0 reported for it, e.g.
    ``epoch 3/8  loss 3.214  clusters 94 img / 131 txt  img_ari 30.9  mAP 21.5  R1 30.0  (23 s)``;
    the fields a report lacks are left out (no mAP between evaluations)."""
    parts = [f"epoch {int(metrics.get('epoch', 0))}/{epochs}"]
    if metrics.get("skipped_training"):
        parts.append("training skipped")
    elif "loss" in metrics:
        parts.append(f"loss {metrics['loss']:.3f}")
    if "img_clusters" in metrics:
        clusters = f"clusters {metrics['img_clusters']:g} img"
        if "txt_clusters" in metrics:
            clusters += f" / {metrics['txt_clusters']:g} txt"
        parts.append(clusters)
    parts += [
        f"{key} {format_metric(key, metrics[key])}" for key in EPOCH_LINE_METRICS if key in metrics
    ]
    if seconds is not None:
        parts.append(f"({seconds:.0f} s)")
    return "  ".join(parts)
