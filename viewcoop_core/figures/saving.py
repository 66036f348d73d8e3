"""What every figure shares: saving through matplotlib's object API at one resolution.

Plots use matplotlib's object API (``Figure`` + the Agg canvas ``savefig`` picks for PNG),
never ``pyplot``: no global backend switch, no figure registry, safe in worker threads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_DPI = 120


def save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    logger.info("wrote %s", path)
    return path
