"""The driver's view of a running training: one live bar per stage, one line per epoch.

``LiveProgress`` creates the run's progress board (``workers/progress.py``), polls it
while ``TorchTrainer.fit`` runs and draws what rank 0 sends: in a terminal, an overall
bar for the run and a transient bar per stage (extract, train) that rich redraws in
place; in a file or a pipe, no bars at all. In both, one line per epoch with its key
figures, printed when Ray Train's report for that epoch arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray
from ray.train import UserCallback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.console import err_console
from viewcoop_core.engine.results import epoch_line
from workers.progress import ProgressBoard, board_name, find_board

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25


class EpochReports(UserCallback):
    """Ray Train callback (runs in the Train controller): rank 0's metrics of every report
    to the board, for the driver's one line per epoch."""

    def __init__(self, board) -> None:
        self.board = board

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if metrics:
            self.board.add_epoch.remote(dict(metrics[0]))


def on_driver() -> bool:
    """True in the driver process; False inside a Ray actor (e.g. a Tune trial of a sweep),
    whose output reaches the console only as prefixed log lines."""
    return ray.get_runtime_context().get_actor_id() is None


def release_board(board, run_name: str, timeout_s: float = 10.0) -> None:
    """Kill the board and wait until its name is free: a resumed run of the same name,
    started right after, creates its board under that name again."""
    ray.kill(board)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and find_board(run_name) is not None:
        time.sleep(0.1)


class LiveProgress:
    """Context manager around ``fit``: ``callbacks`` go to the trainer's ``RunConfig``."""

    def __init__(self, run_name: str, epochs: int, enabled: bool = True) -> None:
        self.run_name, self.epochs = run_name, epochs
        self.enabled = enabled and on_driver()
        self.board = None
        self.bars: Progress | None = None
        self.tasks: dict[str, Any] = {}
        self.run_task = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_epoch_at = time.monotonic()

    @property
    def callbacks(self) -> list:
        return [EpochReports(self.board)] if self.board is not None else []

    def __enter__(self) -> LiveProgress:
        if not self.enabled:
            return self
        self.board = ProgressBoard.options(name=board_name(self.run_name)).remote()
        if err_console.is_terminal:
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self.run_task = self.bars.add_task(f"{self.run_name}: epochs", total=self.epochs)
            self.bars.start()
        self.last_epoch_at = time.monotonic()
        self.thread = threading.Thread(target=self._poll, name="viewcoop-progress", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.board is None:
            return
        self.stop.set()
        self.thread.join(timeout=10)
        self._take()  # what arrived after the last poll
        if self.bars is not None:
            self.bars.stop()
        release_board(self.board, self.run_name)
        self.board = None

    def _poll(self) -> None:
        while not self.stop.wait(POLL_INTERVAL_S):
            try:
                self._take()
            except Exception:  # noqa: BLE001 - a display problem must not stop training
                logger.debug("progress display stopped", exc_info=True)
                return

    def _take(self) -> None:
        bars, epochs = ray.get(self.board.take.remote(), timeout=30)
        for metrics in epochs:
            now = time.monotonic()
            err_console.print(epoch_line(metrics, self.epochs, now - self.last_epoch_at))
            self.last_epoch_at = now
            if self.bars is not None:
                self.bars.update(self.run_task, completed=int(metrics.get("epoch", 0)))
        if self.bars is not None:
            for state in bars:
                self._draw(state)

    def _draw(self, state: dict[str, Any]) -> None:
        task = self.tasks.get(state["id"])
        if task is None and not state["closed"]:
            task = self.tasks[state["id"]] = self.bars.add_task(state["desc"], total=state["total"])
        if task is None:
            return
        self.bars.update(task, completed=state["n"])
        if state["closed"]:
            self.bars.remove_task(task)
            del self.tasks[state["id"]]
