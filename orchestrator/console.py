"""What the user sees: the console, logging setup and result tables."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from viewcoop_core.engine.results import format_metric

console = Console()


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
