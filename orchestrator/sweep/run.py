"""Running (or resuming) a sweep end to end: the pre-Ray plan (``plan.py``: every point
validated, data checked, shared inputs prepared), then the parent run, Tune, and the
summary."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.prepare import pinned
from orchestrator.sweep.grid import GridPoint, axis_columns
from orchestrator.sweep.parent_run import child_runs, log_best, open_parent_run, parent_params
from orchestrator.sweep.plan import (  # noqa: F401 - re-exported
    SPEC_FILE,
    TRAININGS_DIR,
    SweepDraft,
    check_resumable,
    default_sweep_name,
    plan_sweep,
    prepare_shared_inputs,
    prepare_sweep_dir,
    sweep_spec,
    trial_configs,
)
from orchestrator.sweep.report import SummaryRow, summary_rows, write_summary
from orchestrator.sweep.resources import TRIAL_CPUS, concurrency_for
from orchestrator.sweep.seeds import (
    SEED_KEY,
    SeedRow,
    seed_rows,
    seed_table_markdown,
    write_seed_csv,
)
from orchestrator.sweep.trainable import SweepPlan, build_tuner, sweep_trial, trial_errors
from orchestrator.train import init_ray
from viewcoop_core.engine.tracking import metric_history, resolve_tracking_uri

logger = logging.getLogger(__name__)

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
    seed_rows: list[SeedRow] = field(default_factory=list)

    @property
    def incomplete(self) -> list[str]:
        """Points without a result at their last epoch: failed, or stopped by an interrupt
        (Tune's Ctrl-C handler saves its state and returns)."""
        return [row.point.name for row in self.rows if not row.complete]


def run_sweep(
    config_path: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    profile: str | None = None,
    grid_axes: Mapping[str, list[Any]] | None = None,
    name: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    seeds: int | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep of ``config_path`` on Ray Tune and summarise it in MLflow.

    ``overrides``: fixed dotted overrides for every trial. ``grid_axes``: extra axes
    (dotted key -> values), replacing the file's axes of the same keys. ``name``: the
    sweep's folder and parent run name (default: the file's stem, plus ``-<profile>``).
    ``resume``: continue the sweep of that name; without it an existing one is an error.
    ``max_concurrent``: a cap below what the cluster fits. ``seeds``: repeat every point
    with ``train.seed`` 0..seeds-1 and add the mean ± std table (``sweep/seeds.py``).
    """
    draft = plan_sweep(config_path, overrides, profile, grid_axes, name, resume, seeds)
    return execute_sweep(draft, num_cpus, max_concurrent)


def execute_sweep(
    draft: SweepDraft, num_cpus: int | None = None, max_concurrent: int | None = None
) -> SweepOutcome:
    """``run_sweep`` from the point where Ray starts (``plan.plan_sweep`` did the rest)."""
    name, base, sweep_dir, grid = draft.name, draft.base, draft.sweep_dir, draft.grid
    config_path, profile, axes, points = draft.config_path, draft.profile, draft.axes, draft.points
    storage = Path(base.ray.storage_path)
    tracking_uri = resolve_tracking_uri(base.tracking.tracking_uri, storage)
    # Every child logs to the parent's tracking store.
    configs = {
        slug: pinned(cfg, {"tracking.tracking_uri": tracking_uri})
        for slug, cfg in draft.configs.items()
    }
    spec = draft.spec
    init_ray(base.ray.address, base.ray.namespace, num_cpus)

    parent = open_parent_run(
        sweep_dir,
        tracking_uri,
        base.tracking.experiment,
        name,
        str(storage / "mlartifacts"),
        parent_params(spec, base),
    )
    if not parent.client.get_metric_history(parent.run_id, "data_skipped_train_images"):
        parent.log_metrics(draft.data_metrics, step=0)  # once, not again on each resume
    plan = SweepPlan(
        name=name,
        parent_run_id=parent.run_id,
        configs={s: c.to_dict() for s, c in configs.items()},
        unchecked=draft.unchecked,
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
    by_seed = seed_rows(rows) if SEED_KEY in columns else []
    if by_seed:
        directory = sweep_dir / SUMMARY_DIR
        (directory / "table_seeds.md").write_text(seed_table_markdown(by_seed, columns, title))
        artifacts.append(directory / "table_seeds.md")
        artifacts.append(write_seed_csv(by_seed, columns, directory / "table_seeds.csv"))
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
        by_seed,
    )
