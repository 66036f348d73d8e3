"""How a run ends other than normally, as the CLI reports it (no heavy imports here)."""

from __future__ import annotations

from pathlib import Path


class RunInterrupted(KeyboardInterrupt):
    """The user interrupted a run (Ctrl-C); it is resumable under its run name."""

    def __init__(self, run_name: str, run_dir: Path):
        super().__init__(run_name)
        self.run_name, self.run_dir = run_name, run_dir


class RunStopped(RuntimeError):
    """A run stopped itself with a reason the message gives (exit status 1, no traceback)."""


class NonFiniteLossError(RunStopped):
    """Training produced NaN or Inf losses; the run stopped at its last good checkpoint."""
