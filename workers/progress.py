"""Progress of a run, sent from inside Ray to the driver, which draws it.

The driver creates a small named actor per run, the board (``ProgressBoard``, named by
``board_name(run_name)``). Rank 0 sends the state of its stage bars (extract, train) to
it, at most every half second and when a stage ends (``StageBar``); Ray Train's
per-epoch reports reach it through a callback in the Train controller
(``orchestrator.progress.EpochReports``). The driver polls the board and draws one live
bar per stage and one line per epoch (``orchestrator/progress.py``). Without a board (a
sweep trial, a trainer started by a test) nothing is sent and nothing is drawn. This
module imports nothing but Ray: the board's actor process starts light.

This replaces Ray's ``tqdm_ray``, whose driver side redraws a tqdm bar on every update
and on every log line: outside a terminal each redraw is a new fragment of a line.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import ray

SEND_INTERVAL_S = 0.5
_bar_ids = itertools.count()


def board_name(run_name: str) -> str:
    return f"viewcoop-progress-{run_name}"


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest state of each stage bar and the epoch reports not yet taken by the driver."""

    def __init__(self) -> None:
        self.bars: dict[str, dict[str, Any]] = {}
        self.epochs: list[dict[str, float]] = []

    def update_bar(self, state: dict[str, Any]) -> None:
        self.bars[state["id"]] = state

    def add_epoch(self, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
        """(bar states, new epoch reports); a closed bar is handed over once, then dropped."""
        bars, epochs = list(self.bars.values()), self.epochs
        self.bars = {key: bar for key, bar in self.bars.items() if not bar["closed"]}
        self.epochs = []
        return bars, epochs


def find_board(run_name: str):
    """The run's board in the caller's namespace, or None when the driver made none."""
    try:
        return ray.get_actor(board_name(run_name))
    except ValueError:
        return None


class StageBar:
    """One stage's progress on the board: ``update(n)`` as work is done, ``close()`` at the end.

    Sends are fire-and-forget (``.remote()`` without ``ray.get``) and at most one per
    ``SEND_INTERVAL_S``, so a fast loop costs nothing measurable.
    """

    def __init__(self, board, desc: str, total: int, unit: str) -> None:
        self.board = board
        self.state = {
            "id": f"{id(self)}-{next(_bar_ids)}",
            "desc": desc,
            "total": total,
            "unit": unit,
            "n": 0,
            "closed": False,
        }
        self.last_sent = 0.0
        self._send()

    def update(self, n: int = 1) -> None:
        self.state["n"] += n
        if time.monotonic() - self.last_sent >= SEND_INTERVAL_S:
            self._send()

    def close(self) -> None:
        self.state["closed"] = True
        self._send()

    def _send(self) -> None:
        self.last_sent = time.monotonic()
        self.board.update_bar.remote(dict(self.state))
