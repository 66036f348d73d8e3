"""What the user sees: the consoles, the logging setup and paths as printed.

Results go to stdout (``console``); log lines, warnings and the live progress go to
stderr (``err_console``), so ``viewcoop demo > results.txt`` keeps the tables and the
paths. Neither console wraps long lines (a path stays one line a terminal can wrap and a
file keeps whole), and a console that is not a terminal lays tables out for 100 columns
instead of rich's 80, which cut column names short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text

# Loggers of this project: INFO by default, DEBUG with -v.
PROJECT_LOGGERS = ("viewcoop", "orchestrator", "viewcoop_core", "workers")
# Libraries that log chatter at INFO or DEBUG through loggers of their own (open_clip logs
# on the root logger, which stays at WARNING): WARNING by default, INFO with -v. MLflow
# sets its loggers up at import from MLFLOW_LOGGING_LEVEL, which Ray workers started by
# this process inherit.
LIBRARY_LOGGERS = ("urllib3", "matplotlib", "PIL", "filelock")
FILE_WIDTH = 100  # columns assumed when the output is not a terminal


def _make_console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else FILE_WIDTH
    return Console(stderr=stderr, width=width, soft_wrap=True, highlight=False)


console = _make_console(stderr=False)
err_console = _make_console(stderr=True)

_LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "bold red"}


class ConsoleLogHandler(logging.Handler):
    """One line per record on ``err_console``: ``HH:MM:SS message``, the level named (and
    coloured) from WARNING up, the traceback below. Printing through the console keeps
    the lines above a live progress display instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Text(time.strftime("%H:%M:%S ", time.localtime(record.created)), style="dim")
            if record.levelno >= logging.WARNING:
                style = _LEVEL_STYLES.get(record.levelno, "red")
                line.append(f"{record.levelname.lower()}: ", style=style)
            line.append(record.getMessage())
            if record.exc_info:
                line.append("\n" + logging.Formatter().formatException(record.exc_info))
            err_console.print(line)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def verbose_enabled() -> bool:
    """Whether ``-v`` was given (the project's loggers are at DEBUG)."""
    return logging.getLogger("viewcoop_core").isEnabledFor(logging.DEBUG)


def library_log_level() -> int:
    """The level for libraries' own informational logging (Ray, Ray Train, MLflow)."""
    return logging.INFO if verbose_enabled() else logging.WARNING


def setup_logging(verbose: bool) -> None:
    """Project loggers at INFO (DEBUG with ``verbose``); everything else at WARNING (INFO)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        handlers=[ConsoleLogHandler()],
        force=True,
    )
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    logging.captureWarnings(True)  # Python warnings as one log line each, not two raw ones


class _DropRecord(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def without_record(logger_name: str, prefix: str) -> Iterator[None]:
    """Drop the records of logger ``logger_name`` that start with ``prefix`` while the
    block runs: one known, uninformative message at the one call that causes it; the
    logger's other records pass."""
    target = logging.getLogger(logger_name)
    drop = _DropRecord(prefix)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


def shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def say(text: str = "") -> None:
    """Print ``text`` on stdout as it is (no markup, no highlighting)."""
    console.print(text, markup=False, highlight=False)
