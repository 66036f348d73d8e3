"""A run's results as tables: which metrics a row shows and how they are printed."""

from __future__ import annotations

RESULT_METRICS = ("mAP", "R1", "R5", "R10")
HISTORY_COLUMNS = RESULT_METRICS + ("img_clusters", "txt_clusters", "img_ari", "txt_ari")


def history_markdown(
    rows: list[dict[str, float]], columns: tuple[str, ...] = HISTORY_COLUMNS
) -> str:
    """The results table as markdown; rank metrics and ARI in percent."""
    header = ("epoch",) + columns
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(format_metric(key, row.get(key)) for key in header) + " |")
    return "\n".join(lines) + "\n"


def format_metric(key: str, value: float | None) -> str:
    """Rank metrics and ARI in percent with one decimal, counts as plain numbers."""
    if value is None:
        return "-"
    if key in RESULT_METRICS or key.endswith("_ari"):
        return f"{100 * value:.1f}"
    return f"{value:g}"
