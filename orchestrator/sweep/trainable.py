"""The Tune side: the function trainable that trains one grid point, and the Tuner."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.sweep.grid import GridPoint
from orchestrator.train import run_training
from viewcoop_core.config import ExperimentConfig

logger = logging.getLogger(__name__)

POINT_PARAM = "point"


@dataclass
class SweepPlan:
    """What every trial needs, shipped to it by ``tune.with_parameters``.

    ``configs``: slug -> the point's resolved config tree (absolute paths, the sweep's
    tracking URI, Train storage under the sweep folder). ``unchecked``: the points whose
    data failed the driver's pre-flight; their trials run it again (and fail naming why).
    """

    name: str
    parent_run_id: str
    configs: dict[str, dict[str, Any]]
    unchecked: frozenset[str] = frozenset()

    def run_name(self, slug: str) -> str:
        return f"{self.name}-{slug}"


def sweep_trial(config: dict[str, Any], plan: SweepPlan) -> dict[str, Any]:
    """Tune function trainable: train the trial's grid point, forward reports to Tune.

    The run name depends only on the sweep and the point, so a trial that Tune restarts
    after a failure or a restore continues its training and MLflow run.
    """

    slug = config[POINT_PARAM]
    cfg = ExperimentConfig.from_dict(plan.configs[slug])
    outcome = run_training(
        cfg,
        run_name=plan.run_name(slug),
        parent_run_id=plan.parent_run_id,
        callbacks=[TuneReportCallback()],
        # The driver checked the data and pinned the skip list, or found it bad.
        check_data=slug in plan.unchecked,
    )
    final = outcome.history[-1] if outcome.history else {}
    return {**final, "mlflow_run_id": outcome.mlflow_run_id or ""}


def trial_name(trial: Any) -> str:
    return f"trial_{trial.config[POINT_PARAM]}"


def build_tuner(trainable: Any, sweep_dir: Path, grid: Sequence[GridPoint], max_concurrent: int):
    """A new Tuner over the grid's slugs, or the stored one (finished trials kept,
    errored and unfinished ones rescheduled) when ``sweep_dir`` holds Tune state."""

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
