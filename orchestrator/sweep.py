"""Ray Tune sweeps over whole trainings: one Tune trial per grid point, one MLflow parent run.

The grid comes from a config file's ``sweep:`` section and the command line:

.. code-block:: yaml

    sweep:
      graph.tau: ["0", "1", "1or2", "2"]     # an axis: dotted key -> list of values
      points:                                # named bundles of overrides (paper table rows)
        baseline: {prompt.variant: viewcoop, loss.terms: baseline}
        ours: {prompt.variant: viewcoop, loss.terms: full}

Axes are crossed with each other and with the points (no points: one empty point).
Each trial is a Tune function trainable that only drives: it rebuilds its
``ExperimentConfig`` and calls ``orchestrator.train.run_training`` with Tune's
``TuneReportCallback``, so the Train workers' per-epoch reports reach Tune.

On disk, everything of sweep ``NAME`` lives in ``<ray.storage_path>/NAME/``: Tune's
experiment state and trial folders (``trial_<point>``), ``sweep.json`` (the expanded
grid and resolved base config, checked on resume), ``parent_run.json`` (the MLflow
parent run), ``trainings/NAME-<point>/`` (each point's Ray Train run and checkpoints)
and ``summary/`` (the table and plots, also logged to the parent run).

Resuming is explicit: a sweep whose folder exists is only continued with
``resume=True`` (``viewcoop sweep ... --resume``), and only with the same grid and base
config. Finished trials are kept; errored and unfinished ones run again, and since a
point's run name is stable, its training continues from its last Train checkpoint and
its MLflow child run.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import apply_overrides, flatten, load_config, parse_override, read_yaml
from viewcoop_core.config import ConfigError, ExperimentConfig

if TYPE_CHECKING:
    from rich.table import Table

logger = logging.getLogger(__name__)

POINTS_KEY = "points"
POINT_PARAM = "point"
TRIAL_CPUS = 0.01  # the trial process only drives its TorchTrainer
SPEC_FILE = "sweep.json"
PARENT_RUN_FILE = "parent_run.json"
TRAININGS_DIR = "trainings"
SUMMARY_DIR = "summary"
SWEEP_TAG = "viewcoop.sweep"
TABLE_METRICS = ("mAP", "R1", "R5", "R10")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- grid


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


# ------------------------------------------------------------------ concurrency


def trial_demand(
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    actor_cpus: float,
    actor_gpus: float,
    driver_cpus: float = TRIAL_CPUS,
) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds while it trains: its driver, its Train workers (one GPU
    each with ``use_gpu``) and its clustering actor (placed outside the trial's group)."""
    cpus = driver_cpus + num_workers * cpus_per_worker + actor_cpus
    gpus = (num_workers if use_gpu else 0) + actor_gpus
    return cpus, gpus


def max_concurrent_trials(
    cluster_cpus: float, cluster_gpus: float, trial_cpus: float, trial_gpus: float, num_trials: int
) -> int:
    """How many trials fit side by side, so none waits on another's workers; at least 1
    (a trial larger than the cluster waits for an autoscaler), at most ``num_trials``."""
    eps = 1e-6  # Ray rounds resources to 1e-4; 2 / 0.99 must still be 2
    fits = []
    if trial_cpus > 0:
        fits.append(math.floor(cluster_cpus / trial_cpus + eps))
    if trial_gpus > 0:
        fits.append(math.floor(cluster_gpus / trial_gpus + eps))
    fitting = min(fits) if fits else num_trials
    if fitting < 1:
        logger.warning(
            "one trial needs %.2f CPUs and %.2f GPUs but the cluster has %.2f and %.2f: "
            "trials will wait for more nodes",
            trial_cpus,
            trial_gpus,
            cluster_cpus,
            cluster_gpus,
        )
    return max(1, min(fitting, num_trials))


# ---------------------------------------------------------------------- summary


@dataclass
class SummaryRow:
    """One grid point's line of the sweep table; metrics in percent, None when missing."""

    point: GridPoint
    epoch: int | None
    epochs: int
    metrics: dict[str, float | None]
    status: str
    best: bool = False

    @property
    def complete(self) -> bool:
        return self.epoch == self.epochs and self.metrics.get("mAP") is not None


def summary_rows(
    grid: Sequence[GridPoint],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    epochs: Mapping[str, int],
    errors: Mapping[str, str],
    metric: str = "mAP",
) -> list[SummaryRow]:
    """One row per grid point from its evaluation history (fractions, as logged): the last
    evaluated epoch's metrics x 100. The best complete row by ``metric`` is marked."""
    rows = []
    for point in grid:
        history = histories.get(point.slug) or []
        last = history[-1] if history else {}
        epoch = int(last["epoch"]) if "epoch" in last else None
        values = {key: (100.0 * last[key] if key in last else None) for key in TABLE_METRICS}
        if point.slug in errors:
            status = f"failed: {errors[point.slug]}"
        elif epoch is None:
            status = "no result"
        elif epoch < epochs[point.slug]:
            status = f"stopped at epoch {epoch}"
        else:
            status = "finished"
        rows.append(SummaryRow(point, epoch, epochs[point.slug], values, status))
    best = best_row_index(rows, metric)
    if best is not None:
        rows[best].best = True
    return rows


def best_row_index(rows: Sequence[SummaryRow], metric: str = "mAP") -> int | None:
    """Index of the complete row with the highest ``metric`` (first on ties), None if none."""
    scored = [(row.metrics[metric], -i) for i, row in enumerate(rows) if row.complete]
    return -max(scored)[1] if scored else None


def table_records(rows: Sequence[SummaryRow], columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows as text cells: point, the axis values, epoch, metrics (1 decimal), best, status."""
    records = []
    for row in rows:
        record = {"point": row.point.name}
        record.update(
            {column: format_value(row.point.overrides.get(column, "")) for column in columns}
        )
        record["epoch"] = "-" if row.epoch is None else f"{row.epoch}/{row.epochs}"
        record.update({key: "-" if v is None else f"{v:.1f}" for key, v in row.metrics.items()})
        record["best"] = "*" if row.best else ""
        record["status"] = row.status
        records.append(record)
    return records


def table_markdown(rows: Sequence[SummaryRow], columns: Sequence[str], title: str) -> str:
    """The paper-style table: metrics in percent at the final epoch, best row bold and starred."""
    records = table_records(rows, columns)
    header = ["point", *columns, "epoch", *TABLE_METRICS, "best", "status"]
    lines = [
        f"# {title}",
        "",
        "mAP and Rank-k in percent at the last evaluated epoch; * marks the best mAP.",
        "",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append(
        "|"
        + "|".join("---:" if h in TABLE_METRICS or h == "epoch" else "---" for h in header)
        + "|"
    )
    for row, record in zip(rows, records):
        cells = [record[h] for h in header]
        if row.best:
            cells = [
                f"**{c}**" if c and h not in ("best", "status") else c
                for h, c in zip(header, cells)
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table_csv(rows: Sequence[SummaryRow], columns: Sequence[str], path: Path) -> Path:
    """CSV with full-precision percent metrics (empty when missing) and best as 1/0."""
    header = ["point", *columns, "epoch", "epochs", *TABLE_METRICS, "best", "status"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [
                    row.point.name,
                    *(format_value(row.point.overrides.get(c, "")) for c in columns),
                    "" if row.epoch is None else row.epoch,
                    row.epochs,
                    *(
                        "" if row.metrics[k] is None else f"{row.metrics[k]:.4f}"
                        for k in TABLE_METRICS
                    ),
                    int(row.best),
                    row.status,
                ]
            )
    return path


def rich_summary_table(rows: Sequence[SummaryRow], columns: Sequence[str], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    header = ["point", *columns, "epoch", *TABLE_METRICS, "best", "status"]
    for name in header:
        table.add_column(name, justify="right" if name in TABLE_METRICS else "left")
    for row, record in zip(rows, table_records(rows, columns)):
        table.add_row(*(record[h] for h in header), style="bold green" if row.best else None)
    return table


def plot_metric_curves(
    grid: Sequence[GridPoint],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: Path,
    metric: str = "mAP",
) -> Path:
    """``metric`` (percent) against epoch, one line per grid point."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for point in grid:
        history = histories.get(point.slug) or []
        if history:
            axes.plot(
                [h["epoch"] for h in history],
                [100 * h[metric] for h in history],
                marker="o",
                label=point.name,
            )
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"{metric} (%)")
    axes.set_title(f"{metric} per epoch")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_bars(
    labels: Sequence[str], values: Mapping[str, Sequence[float]], title: str, path: Path
) -> Path:
    """Grouped bars: one group per label, one bar per metric (percent)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 1.2 * len(labels) + 2), 4.5))
    axes = figure.subplots()
    width = 0.8 / max(1, len(values))
    for i, (metric, heights) in enumerate(values.items()):
        positions = [x + (i - (len(values) - 1) / 2) * width for x in range(len(labels))]
        bars = axes.bar(positions, heights, width, label=metric)
        axes.bar_label(bars, fmt="%.1f", fontsize="x-small")
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_ylabel("%")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def axis_means(
    rows: Sequence[SummaryRow], column: str, metrics: Sequence[str]
) -> tuple[list[str], dict[str, list[float]]]:
    """Each value of ``column`` (first-seen order) -> the mean of ``metrics`` over the
    complete rows holding it: the axis' marginal effect when the grid has other axes."""
    groups: dict[str, list[SummaryRow]] = {}
    for row in rows:
        if row.complete:
            groups.setdefault(format_value(row.point.overrides.get(column, "")), []).append(row)
    labels = list(groups)
    means = {
        m: [sum(r.metrics[m] for r in groups[label]) / len(groups[label]) for label in labels]
        for m in metrics
    }
    return labels, means


def write_summary(
    rows: Sequence[SummaryRow],
    grid: Sequence[GridPoint],
    columns: Sequence[str],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    directory: Path,
    title: str,
    per_point_bars: bool,
) -> list[Path]:
    """table.md, table.csv, mAP_per_epoch.png and bar charts (per parameter column; per
    point when the grid has named points) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.md").write_text(table_markdown(rows, columns, title))
    paths = [directory / "table.md", write_table_csv(rows, columns, directory / "table.csv")]
    paths.append(plot_metric_curves(grid, histories, directory / "mAP_per_epoch.png"))
    bar_metrics = ("mAP", "R1")
    if per_point_bars:
        done = [row for row in rows if row.complete]
        if done:
            heights = {m: [row.metrics[m] for row in done] for m in bar_metrics}
            paths.append(
                plot_bars(
                    [r.point.name for r in done],
                    heights,
                    "final epoch per point",
                    directory / "bars_point.png",
                )
            )
    for column in columns:
        labels, means = axis_means(rows, column, bar_metrics)
        if len(labels) >= 2:
            path = directory / f"bars_{slugify(column)}.png"
            bar_title = f"final epoch by {column}" + (
                " (mean over the other columns)" if len(columns) > 1 else ""
            )
            paths.append(plot_bars(labels, means, bar_title, path))
    return paths


# ------------------------------------------------------------------ Ray Tune side


@dataclass
class SweepPlan:
    """What every trial needs, shipped to it by ``tune.with_parameters``.

    ``configs``: slug -> the point's resolved config tree (absolute paths, the sweep's
    tracking URI, Train storage under the sweep folder).
    """

    name: str
    parent_run_id: str
    configs: dict[str, dict[str, Any]]

    def run_name(self, slug: str) -> str:
        return f"{self.name}-{slug}"


def sweep_trial(config: dict[str, Any], plan: SweepPlan) -> dict[str, Any]:
    """Tune function trainable: train the trial's grid point, forward reports to Tune.

    The run name depends only on the sweep and the point, so a trial that Tune restarts
    after a failure or a restore continues its training and MLflow run.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.train import run_training

    slug = config[POINT_PARAM]
    cfg = ExperimentConfig.from_dict(plan.configs[slug])
    outcome = run_training(
        cfg,
        run_name=plan.run_name(slug),
        parent_run_id=plan.parent_run_id,
        callbacks=[TuneReportCallback()],
    )
    final = outcome.history[-1] if outcome.history else {}
    return {**final, "mlflow_run_id": outcome.mlflow_run_id or ""}


def trial_name(trial: Any) -> str:
    return f"trial_{trial.config[POINT_PARAM]}"


@dataclass
class SweepOutcome:
    name: str
    sweep_dir: Path
    parent_run_id: str
    tracking_uri: str
    grid: list[GridPoint]
    columns: list[str]
    rows: list[SummaryRow]
    child_run_ids: dict[str, str]
    errors: dict[str, str]
    artifacts: list[Path] = field(default_factory=list)

    @property
    def incomplete(self) -> list[str]:
        """Points without a result at their last epoch: failed, or stopped by an interrupt
        (Tune's Ctrl-C handler saves its state and returns)."""
        return [row.point.name for row in self.rows if not row.complete]


def default_sweep_name(config_path: str | Path, profile: str | None) -> str:
    stem = Path(config_path).stem
    return f"{stem}-{profile}" if profile else stem


def sweep_spec(
    name: str,
    config_path: str | Path,
    profile: str | None,
    overrides: Mapping[str, Any],
    grid: Sequence[GridPoint],
    base: ExperimentConfig,
) -> dict[str, Any]:
    """The sweep's identity, JSON-normalised: a resume must reproduce ``grid`` and ``base``."""
    spec = {
        "name": name,
        "config": str(Path(config_path).resolve()),
        "profile": profile,
        "overrides": dict(overrides),
        "grid": [{"name": p.name, "slug": p.slug, "overrides": p.overrides} for p in grid],
        "base": base.to_dict(),
    }
    return json.loads(json.dumps(spec))


def check_resumable(stored: Mapping[str, Any], current: Mapping[str, Any], sweep_dir: Path) -> None:
    """Refuse to resume a sweep with another grid or base config: Tune would keep the old
    trials while the trials it reruns would train something else."""
    old, new = flatten(stored["base"]), flatten(current["base"])
    # Fields that appeared or vanished with a code update are not a change of settings.
    added_or_removed = sorted(old.keys() ^ new.keys())
    if added_or_removed:
        logger.warning(
            "config fields %s exist on one side only (code updated since the sweep began)",
            added_or_removed,
        )
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    if changed or stored["grid"] != current["grid"]:
        detail = []
        if changed:
            detail.append(f"base config fields {changed[:8]}")
        if stored["grid"] != current["grid"]:
            detail.append(
                f"grid {[p['name'] for p in stored['grid']]} -> {[p['name'] for p in current['grid']]} "
                "(or their overrides)"
            )
        raise ConfigError(
            f"cannot resume sweep {stored['name']!r} at {sweep_dir}: it was started with other "
            f"settings ({'; '.join(detail)}). Resume with the original command line, or start "
            "a new sweep with --name"
        )


def open_parent_run(
    sweep_dir: Path,
    tracking_uri: str,
    experiment: str,
    name: str,
    artifact_root: str,
    params: Mapping[str, Any],
):
    """The sweep's MLflow parent run: the one in ``parent_run.json`` when there is one
    (a resumed sweep), else a new run with ``params``, recorded there."""
    from workers.tracking import RunTracker

    record = sweep_dir / PARENT_RUN_FILE
    if record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        return RunTracker(tracking_uri, experiment, name, run_id=run_id)
    tracker = RunTracker(tracking_uri, experiment, name, artifact_root=artifact_root)
    tracker.set_tag(SWEEP_TAG, name)
    tracker.log_params(params)
    record.write_text(
        json.dumps(
            {"run_id": tracker.run_id, "tracking_uri": tracking_uri, "experiment": experiment}
        )
    )
    return tracker


def parent_params(spec: Mapping[str, Any], base: ExperimentConfig) -> dict[str, Any]:
    params = flatten(base.to_dict())
    params["sweep.name"] = spec["name"]
    params["sweep.config"] = spec["config"]
    params["sweep.profile"] = spec["profile"]
    params["sweep.num_points"] = len(spec["grid"])
    for point in spec["grid"]:
        params[f"sweep.point.{point['slug']}"] = ", ".join(
            f"{k}={format_value(v)}" for k, v in point["overrides"].items()
        )
    return params


def trial_configs(
    config_path: str | Path,
    overrides: Mapping[str, Any],
    profile: str | None,
    grid: Sequence[GridPoint],
    tracking_uri: str,
    trainings_dir: Path,
) -> dict[str, ExperimentConfig]:
    """slug -> the point's config, pinned for running inside a trial: Tune starts trials
    in their own folder, so paths are made absolute here; every child logs to the
    parent's tracking store; Train runs live under the sweep folder."""
    from orchestrator.train import absolute_paths

    pinned = {"tracking.tracking_uri": tracking_uri, "ray.storage_path": str(trainings_dir)}
    configs = {}
    for point in grid:
        cfg = absolute_paths(point_config(config_path, overrides, profile, point))
        configs[point.slug] = ExperimentConfig.from_dict(apply_overrides(cfg.to_dict(), pinned))
    return configs


def prepare_shared_inputs(configs: Mapping[str, ExperimentConfig]) -> dict[str, ExperimentConfig]:
    """Draw the synthetic sets and pretrain the synthetic CLIPs the points need, here on
    the driver, not in concurrent trials that would do the same work side by side.
    Returns the configs with the pretrained weights pinned as ``model.pretrained``."""
    from orchestrator.train import ensure_dataset, ensure_weights

    prepared = {}
    for slug, cfg in configs.items():
        ensure_dataset(cfg)
        prepared[slug] = ensure_weights(cfg)
    return prepared


def concurrency_for(configs: Iterable[ExperimentConfig], num_trials: int) -> int:
    """``max_concurrent_trials`` for the connected cluster and the largest trial."""
    import ray

    from orchestrator.actors import actor_cpus, actor_gpus

    resources = ray.cluster_resources()
    demands = []
    for cfg in configs:
        gpus = actor_gpus(cfg.ray.actor_num_gpus)
        demands.append(
            trial_demand(
                cfg.ray.num_workers,
                cfg.ray.cpus_per_worker,
                cfg.ray.use_gpu,
                actor_cpus(cfg.ray.actor_num_cpus, gpus),
                gpus,
            )
        )
    cpus, gpus = max(d[0] for d in demands), max(d[1] for d in demands)
    limit = max_concurrent_trials(
        resources.get("CPU", 0.0), resources.get("GPU", 0.0), cpus, gpus, num_trials
    )
    logger.info(
        "each trial holds %.2f CPUs and %g GPUs; cluster %s CPUs / %s GPUs -> %d trial(s) at a time",
        cpus,
        gpus,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
        limit,
    )
    return limit


def build_tuner(trainable: Any, sweep_dir: Path, grid: Sequence[GridPoint], max_concurrent: int):
    """A new Tuner over the grid's slugs, or the stored one (finished trials kept,
    errored and unfinished ones rescheduled) when ``sweep_dir`` holds Tune state."""
    from ray import tune

    if tune.Tuner.can_restore(sweep_dir):
        # The restored Tuner keeps the TuneConfig it was created with (concurrency included).
        logger.info("restoring the Tune experiment at %s", sweep_dir)
        return tune.Tuner.restore(
            str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True
        )
    return tune.Tuner(
        trainable,
        param_space={POINT_PARAM: tune.grid_search([p.slug for p in grid])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            # A failed trial stays failed until the sweep is resumed: Train retries
            # worker failures itself (ray.max_failures) inside the trial.
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def trial_errors(results: Any) -> dict[str, str]:
    """slug -> "ExceptionType: <last line of its message>" for every errored trial."""
    errors = {}
    for result in results:
        if result.error is not None:
            cause = getattr(result.error, "cause", None) or result.error
            message = str(cause).strip().splitlines()
            errors[result.config[POINT_PARAM]] = (
                f"{type(cause).__name__}: {message[-1] if message else ''}"[:300]
            )
    return errors


def child_runs(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Run name -> id of the parent's newest child run of that name.

    A trial interrupted before its first checkpoint starts a new MLflow run when it is
    resumed; the older run of that name was left RUNNING by the killed worker and is
    closed here as KILLED.
    """
    from mlflow.entities import RunStatus
    from mlflow.tracking import MlflowClient

    from workers.tracking import PARENT_TAG, RUN_NAME_TAG

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    newest: dict[str, Any] = {}
    for run in runs:
        run_name = run.data.tags.get(RUN_NAME_TAG, run.info.run_name)
        stale = newest.get(run_name)
        if stale is not None and stale.info.status == RunStatus.to_string(RunStatus.RUNNING):
            logger.warning(
                "closing MLflow run %s of %s, superseded by %s",
                stale.info.run_id,
                run_name,
                run.info.run_id,
            )
            client.set_terminated(stale.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        newest[run_name] = run
    return {run_name: run.info.run_id for run_name, run in newest.items()}


def run_sweep(
    config_path: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    profile: str | None = None,
    grid_axes: Mapping[str, list[Any]] | None = None,
    name: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep of ``config_path`` on Ray Tune and summarise it in MLflow.

    ``overrides``: fixed dotted overrides for every trial. ``grid_axes``: extra axes
    (dotted key -> values), replacing the file's axes of the same keys. ``name``: the
    sweep's folder and parent run name (default: the file's stem, plus ``-<profile>``).
    ``resume``: continue the sweep of that name; without it an existing one is an error.
    ``max_concurrent``: a cap below what the cluster fits.
    """
    from ray import tune

    from orchestrator.train import absolute_paths, init_ray
    from workers.tracking import resolve_tracking_uri

    fixed = (
        dict(overrides) if isinstance(overrides, Mapping) else dict(map(parse_override, overrides))
    )
    axes, points = read_sweep_section(config_path)
    axes.update(grid_axes or {})
    grid = expand_grid(axes, points)
    check_fixed_overrides(grid, fixed)
    name = name or default_sweep_name(config_path, profile)
    base = absolute_paths(load_config(config_path, fixed, profile=profile))
    storage = Path(base.ray.storage_path)
    sweep_dir = storage / name
    tracking_uri = resolve_tracking_uri(base.tracking.tracking_uri, storage)
    # Every point is validated before anything is written or started.
    configs = trial_configs(
        config_path, fixed, profile, grid, tracking_uri, sweep_dir / TRAININGS_DIR
    )
    spec = sweep_spec(name, config_path, profile, fixed, grid, base)
    prepare_sweep_dir(sweep_dir, spec, resume)
    configs = prepare_shared_inputs(configs)
    init_ray(base.ray.address, base.ray.namespace, num_cpus)

    parent = open_parent_run(
        sweep_dir,
        tracking_uri,
        base.tracking.experiment,
        name,
        str(storage / "mlartifacts"),
        parent_params(spec, base),
    )
    plan = SweepPlan(
        name=name, parent_run_id=parent.run_id, configs={s: c.to_dict() for s, c in configs.items()}
    )
    limit = concurrency_for(configs.values(), len(grid))
    if max_concurrent is not None:
        limit = max(1, min(limit, max_concurrent))
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, plan=plan), {"cpu": TRIAL_CPUS}
    )
    logger.info(
        "sweep %s: %d trial(s), up to %d at a time, in %s", name, len(grid), limit, sweep_dir
    )
    try:
        results = build_tuner(trainable, sweep_dir, grid, limit).fit()
    except BaseException:
        parent.finish(failed=True)
        raise
    outcome = summarise_sweep(
        parent,
        plan,
        tracking_uri,
        sweep_dir,
        grid,
        axis_columns(axes, points),
        trial_errors(results),
        epochs={slug: cfg.train.epochs for slug, cfg in configs.items()},
        title=f"sweep {name}: {Path(config_path).name}"
        + (f" (profile {profile})" if profile else ""),
        per_point_bars=bool(points),
    )
    parent.finish(failed=bool(outcome.incomplete))
    if outcome.incomplete:
        logger.error(
            "unfinished points %s (errors: %s); continue them with --resume",
            outcome.incomplete,
            outcome.errors,
        )
    return outcome


def summarise_sweep(
    parent: Any,
    plan: SweepPlan,
    tracking_uri: str,
    sweep_dir: Path,
    grid: Sequence[GridPoint],
    columns: list[str],
    errors: dict[str, str],
    epochs: Mapping[str, int],
    title: str,
    per_point_bars: bool,
) -> SweepOutcome:
    """Read every child's evaluation history from MLflow, write the table and plots, and
    log them (and the best point's figures) to the parent run."""
    from orchestrator.train import metric_history

    runs = child_runs(tracking_uri, parent.run_id)
    child_ids = {p.slug: runs[plan.run_name(p.slug)] for p in grid if plan.run_name(p.slug) in runs}
    histories = {slug: metric_history(tracking_uri, run_id) for slug, run_id in child_ids.items()}
    rows = summary_rows(grid, histories, epochs, errors)
    artifacts = write_summary(
        rows, grid, columns, histories, sweep_dir / SUMMARY_DIR, title, per_point_bars
    )
    for path in artifacts:
        parent.log_artifact(path, SUMMARY_DIR)
    log_best(parent, rows)
    return SweepOutcome(
        plan.name,
        sweep_dir,
        parent.run_id,
        tracking_uri,
        list(grid),
        columns,
        rows,
        child_ids,
        errors,
        artifacts,
    )


def prepare_sweep_dir(sweep_dir: Path, spec: Mapping[str, Any], resume: bool) -> None:
    """Create the folder of a new sweep, or check a resumed one matches ``spec``."""
    spec_path = sweep_dir / SPEC_FILE
    if resume:
        if not spec_path.is_file():
            raise FileNotFoundError(
                f"no sweep {spec['name']!r} to resume: {spec_path} does not exist (drop --resume to start it)"
            )
        check_resumable(json.loads(spec_path.read_text()), spec, sweep_dir)
        return
    if spec_path.is_file() or (sweep_dir.is_dir() and any(sweep_dir.iterdir())):
        raise ConfigError(
            f"sweep {spec['name']!r} already exists at {sweep_dir}; pass --resume to continue it "
            "or --name to start another"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1))


def log_best(parent: Any, rows: Sequence[SummaryRow]) -> None:
    """The best point's figures as parent metrics (percent), for the MLflow runs list."""
    best = next((row for row in rows if row.best), None)
    if best is not None:
        parent.log_metrics(
            {f"best_{k}": v for k, v in best.metrics.items() if v is not None}, step=best.epochs
        )
        parent.set_tag("viewcoop.best_point", best.point.name)
