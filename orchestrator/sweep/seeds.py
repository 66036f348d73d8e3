"""Repeating a sweep's grid over seeds, and the table that says which differences are real.

``--seeds N`` adds ``train.seed`` as the innermost axis (seeds 0..N-1), so every grid
point trains N times with its own initialisation of the learnt parts, sampling and
augmentation (the synthetic set and the shipped backbone stay the same). The seed table
has one row per point: the mean and the sample standard deviation of each metric over
its finished seeds, and the difference to the best point's mean, marked when it is
larger than twice the pooled standard deviation of the two rows (the README's rule for
calling a difference real).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.sweep.grid import format_value
from orchestrator.sweep.report import TABLE_METRICS, SummaryRow
from viewcoop_core.config import ConfigError

SEED_KEY = "train.seed"
_SEED_LABELS = ("seed=", f"{SEED_KEY}=")  # how expand_grid names the seed in a point
MAX_SEEDS = 100


def with_seed_axis(axes: Mapping[str, list[Any]], seeds: int | None) -> dict[str, list[Any]]:
    """``axes`` with ``train.seed`` = 0..seeds-1 as the last (innermost) axis."""
    axes = dict(axes)
    if seeds is None:
        return axes
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds={seeds!r} is not allowed; expected an int in 1..{MAX_SEEDS}")
    if SEED_KEY in axes:
        raise ConfigError(
            f"--seeds and a {SEED_KEY} axis both set the seeds; keep one "
            f"({SEED_KEY} has {axes[SEED_KEY]})"
        )
    axes[SEED_KEY] = list(range(seeds))
    return axes


@dataclass
class SeedRow:
    """One grid point over its seeds: metrics in percent (mean, sample std), ``n`` the
    finished seeds of ``total``; ``delta``: mean mAP minus the best row's; ``real``:
    |delta| > 2 x the pooled std (None for the best row itself or without 2 seeds each)."""

    name: str
    overrides: dict[str, Any]
    n: int
    total: int
    mean: dict[str, float | None]
    std: dict[str, float | None]
    best: bool = False
    delta: float | None = None
    real: bool | None = None


def point_key(overrides: Mapping[str, Any]) -> tuple:
    """The point a row belongs to: its overrides without the seed."""
    return tuple(sorted((k, format_value(v)) for k, v in overrides.items() if k != SEED_KEY))


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None with fewer than 2 values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_rows(rows: Sequence[SummaryRow], metric: str = "mAP") -> list[SeedRow]:
    """Rows of a seeded grid, one per point (grid order), compared with the best mean."""
    groups: dict[tuple, list[SummaryRow]] = {}
    for row in rows:
        groups.setdefault(point_key(row.point.overrides), []).append(row)
    out = []
    for members in groups.values():
        done = [r for r in members if r.complete]
        stats = {
            k: mean_std([r.metrics[k] for r in done if r.metrics[k] is not None])
            for k in TABLE_METRICS
        }
        first = members[0].point
        name = (
            ", ".join(part for part in first.name.split(", ") if not part.startswith(_SEED_LABELS))
            or "default"
        )
        out.append(
            SeedRow(
                name=name,
                overrides={k: v for k, v in first.overrides.items() if k != SEED_KEY},
                n=len(done),
                total=len(members),
                mean={k: s[0] for k, s in stats.items()},
                std={k: s[1] for k, s in stats.items()},
            )
        )
    mark_against_best(out, metric)
    return out


def mark_against_best(rows: list[SeedRow], metric: str) -> None:
    """Set ``best``, ``delta`` and ``real`` (see ``SeedRow``) by ``metric``'s mean."""
    scored = [i for i, r in enumerate(rows) if r.mean[metric] is not None]
    if not scored:
        return
    best = max(scored, key=lambda i: rows[i].mean[metric])
    rows[best].best = True
    top = rows[best]
    for i in scored:
        row = rows[i]
        row.delta = row.mean[metric] - top.mean[metric]
        if i == best or row.std[metric] is None or top.std[metric] is None:
            continue
        pooled = math.sqrt((row.std[metric] ** 2 + top.std[metric] ** 2) / 2)
        row.real = abs(row.delta) > 2 * pooled


def cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def delta_cell(row: SeedRow) -> str:
    if row.best:
        return "best"
    if row.delta is None:
        return "-"
    verdict = {True: " (> 2 std)", False: " (within 2 std)", None: ""}[row.real]
    return f"{row.delta:+.1f}{verdict}"


def seed_table_markdown(rows: Sequence[SeedRow], columns: Sequence[str], title: str) -> str:
    """Mean ± std over seeds per point, and each point's mAP difference to the best."""
    columns = [c for c in columns if c != SEED_KEY]
    header = ["point", *columns, "seeds", *TABLE_METRICS, "mAP vs best"]
    lines = [
        f"# {title}: mean ± std over seeds",
        "",
        "Metrics in percent at the last epoch, over each point's finished seeds (sample std). "
        "A difference to the best point is marked > 2 std when it exceeds twice the pooled "
        "std of the two points.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h in TABLE_METRICS else "---" for h in header) + "|",
    ]
    for row in rows:
        cells = [row.name, *(format_value(row.overrides.get(c, "")) for c in columns)]
        cells.append(f"{row.n}/{row.total}")
        cells += [cell(row.mean[k], row.std[k]) for k in TABLE_METRICS]
        cells.append(delta_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_seed_csv(rows: Sequence[SeedRow], columns: Sequence[str], path: Path) -> Path:
    """The seed table with full precision: mean and std columns per metric."""
    columns = [c for c in columns if c != SEED_KEY]
    header = ["point", *columns, "seeds_finished", "seeds"]
    header += [f"{k}_{stat}" for k in TABLE_METRICS for stat in ("mean", "std")]
    header += ["mAP_delta_vs_best", "beyond_2std", "best"]

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [
                    row.name,
                    *(format_value(row.overrides.get(c, "")) for c in columns),
                    row.n,
                    row.total,
                    *(number(getattr(row, s)[k]) for k in TABLE_METRICS for s in ("mean", "std")),
                    number(row.delta),
                    "" if row.real is None else int(row.real),
                    int(row.best),
                ]
            )
    return path
