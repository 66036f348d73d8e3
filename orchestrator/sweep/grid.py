"""The sweep's grid (Ray-free): axes and named points from a config's ``sweep:`` section
and the command line, expanded into ``GridPoint`` trials with stable slugs."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import load_config, parse_override, read_yaml
from viewcoop_core.config import ConfigError, ExperimentConfig

logger = logging.getLogger(__name__)

POINTS_KEY = "points"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class GridPoint:
    """One trial of a sweep.

    ``name``: the label shown in tables ("ours", "tau=1or2", "ours, tau=1or2").
    ``slug``: ``name`` made safe for folder, run and actor names; unique in a grid.
    ``overrides``: dotted key -> value, applied over the sweep's base config.
    """

    name: str
    slug: str
    overrides: dict[str, Any]


def read_sweep_section(path: str | Path) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]]]:
    """``(axes, points)`` of a config file's ``sweep:`` section (both empty when absent)."""
    section = read_yaml(path).get("sweep") or {}
    if not isinstance(section, dict):
        raise ConfigError(
            f"'sweep' in {path} must be a mapping of dotted keys to value lists (and 'points')"
        )
    points = section.get(POINTS_KEY) or {}
    axes = {key: values for key, values in section.items() if key != POINTS_KEY}
    check_axes(axes, f"'sweep' in {path}")
    check_points(points, f"'sweep.points' in {path}")
    return axes, {str(name): dict(overrides or {}) for name, overrides in points.items()}


def check_axes(axes: Mapping[str, Any], where: str) -> None:
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}: axis {key!r} must be a non-empty list of values, got {values!r} "
                f"(e.g. graph.tau: ['0', '1or2'])"
            )


def check_points(points: Any, where: str) -> None:
    if not isinstance(points, dict):
        raise ConfigError(
            f"{where} must map row names to mappings of dotted overrides, got {points!r}"
        )
    for name, overrides in points.items():
        if overrides is not None and not isinstance(overrides, dict):
            raise ConfigError(
                f"{where}: point {name!r} must be a mapping of dotted overrides "
                f"(e.g. {{prompt.variant: coop, loss.terms: full}}), got {overrides!r}"
            )


def parse_grid_options(items: Iterable[str]) -> dict[str, list[Any]]:
    """Command-line axes ``["graph.tau=['0', '2']"]`` -> ``{"graph.tau": ["0", "2"]}``."""
    axes = dict(parse_override(item) for item in items)
    check_axes(axes, "--grid")
    return axes


def format_value(value: Any) -> str:
    """A grid value as table text: lists joined by "," (tau [1, 2] -> "1,2")."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def short_axis_names(keys: Sequence[str]) -> dict[str, str]:
    """Last component of each dotted key ("graph.tau" -> "tau") where that is unambiguous."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def slugify(name: str) -> str:
    slug = _UNSAFE_CHARS.sub("_", name).strip("_.")
    if not slug:
        raise ConfigError(f"grid point name {name!r} has no letters or digits to name its run by")
    return slug


def expand_grid(
    axes: Mapping[str, list[Any]], points: Mapping[str, Mapping[str, Any]]
) -> list[GridPoint]:
    """Every point crossed with the cartesian product of the axes, points outermost.

    A key may not be both an axis and set by a point: one of the two would be ignored.
    """
    for name, overrides in points.items():
        shared = sorted(set(overrides) & set(axes))
        if shared:
            raise ConfigError(
                f"sweep point {name!r} sets {shared}, which the sweep also has as axes; keep one"
            )
    bundles = list(points.items()) or [("", {})]
    short = short_axis_names(list(axes))
    grid = []
    for (point_name, point_overrides), values in itertools.product(
        bundles, itertools.product(*axes.values())
    ):
        axis_values = dict(zip(axes, values))
        label_parts = [point_name] if point_name else []
        label_parts += [f"{short[key]}={format_value(value)}" for key, value in axis_values.items()]
        name = ", ".join(label_parts) or "default"
        grid.append(
            GridPoint(name=name, slug=slugify(name), overrides={**point_overrides, **axis_values})
        )
    check_unique_slugs(grid)
    return grid


def check_unique_slugs(grid: Sequence[GridPoint]) -> None:
    seen: dict[str, str] = {}
    for point in grid:
        if point.slug in seen:
            raise ConfigError(
                f"grid points {seen[point.slug]!r} and {point.name!r} both become run name part "
                f"{point.slug!r}; rename one"
            )
        seen[point.slug] = point.name


def check_fixed_overrides(grid: Sequence[GridPoint], overrides: Mapping[str, Any]) -> None:
    """A fixed override of a key the grid varies would be silently overwritten: refuse it."""
    varied = sorted({key for point in grid for key in point.overrides} & set(overrides))
    if varied:
        raise ConfigError(
            f"overrides {varied} set keys the sweep grid varies; drop them or the grid axis"
        )


def axis_columns(
    axes: Mapping[str, list[Any]], points: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The table's parameter columns: the keys the named points set (first-seen order),
    then the axes."""
    columns: list[str] = []
    for overrides in points.values():
        columns += [key for key in overrides if key not in columns]
    return columns + [key for key in axes if key not in columns]


def point_config(
    config_path: str | Path, overrides: Mapping[str, Any], profile: str | None, point: GridPoint
) -> ExperimentConfig:
    """Defaults < file < profile < fixed overrides < the point's overrides; validated."""
    return load_config(config_path, {**overrides, **point.overrides}, profile=profile)
