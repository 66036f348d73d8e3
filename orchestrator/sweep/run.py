"""Running (or resuming) a sweep end to end: validate every point, prepare shared inputs,
the parent run, Tune, and the summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.config import apply_overrides, flatten, load_config, parse_override
from orchestrator.sweep.grid import (
    GridPoint,
    axis_columns,
    check_fixed_overrides,
    expand_grid,
    point_config,
    read_sweep_section,
)
from orchestrator.sweep.parent_run import child_runs, log_best, open_parent_run, parent_params
from orchestrator.sweep.report import SummaryRow, summary_rows, write_summary
from orchestrator.sweep.resources import TRIAL_CPUS, concurrency_for
from orchestrator.sweep.trainable import SweepPlan, build_tuner, sweep_trial, trial_errors
from orchestrator.train import absolute_paths, ensure_dataset, ensure_weights, init_ray
from viewcoop_core.config import ConfigError, ExperimentConfig
from viewcoop_core.engine.tracking import metric_history, resolve_tracking_uri
from viewcoop_core.outputs import check_output_name, claim_output_dir

logger = logging.getLogger(__name__)

SPEC_FILE = "sweep.json"
TRAININGS_DIR = "trainings"
SUMMARY_DIR = "summary"


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

    prepared = {}
    for slug, cfg in configs.items():
        ensure_dataset(cfg)
        prepared[slug] = ensure_weights(cfg)
    return prepared


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

    fixed = (
        dict(overrides) if isinstance(overrides, Mapping) else dict(map(parse_override, overrides))
    )
    axes, points = read_sweep_section(config_path)
    axes.update(grid_axes or {})
    grid = expand_grid(axes, points)
    check_fixed_overrides(grid, fixed)
    name = check_output_name(name or default_sweep_name(config_path, profile), "sweep name")
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
    claim_output_dir(sweep_dir, "sweep", purpose=f"sweep {spec['name']!r}")
    spec_path.write_text(json.dumps(spec, indent=1))
