"""The part of a sweep that runs before Ray (Ray-, MLflow- and torch-free): the grid
expanded and every point's config validated, the Ray head's address and the data
checked, then the sweep folder claimed (or a resume checked) and the shared inputs
prepared. ``viewcoop sweep`` runs it before importing Ray, so a typo or a bad file is
reported in seconds and leaves no folder behind."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import flatten, load_config, parse_override
from orchestrator.prepare import (
    SKIP_LIST,
    absolute_paths,
    check_data,
    check_reachable,
    ensure_dataset,
    ensure_weights,
    pinned,
    with_view_masks,
    write_skip_list,
)
from orchestrator.sweep.grid import (
    GridPoint,
    check_fixed_overrides,
    expand_grid,
    point_config,
    read_sweep_section,
)
from orchestrator.sweep.seeds import with_seed_axis
from viewcoop_core.config import ConfigError, ExperimentConfig
from viewcoop_core.data.datasets import DatasetFormatError, DatasetLayoutError
from viewcoop_core.data.masks import MissingMasksError
from viewcoop_core.data.preflight import DataCheckError, PreflightReport
from viewcoop_core.outputs import check_output_name, claim_output_dir

logger = logging.getLogger(__name__)

SPEC_FILE = "sweep.json"
TRAININGS_DIR = "trainings"
DATA_ERRORS = (DataCheckError, DatasetLayoutError, DatasetFormatError, MissingMasksError)


@dataclass
class SweepDraft:
    """A sweep ready for Ray: its grid, base config, folder and each point's config
    (absolute paths, pinned weights and skip lists; tracking store not yet pinned).
    ``unchecked``: the points whose data failed the pre-flight (their trials check again,
    fail naming the problem, and run once the data is fixed and the sweep resumed)."""

    name: str
    config_path: str | Path
    profile: str | None
    axes: dict[str, list[Any]]
    points: dict[str, dict[str, Any]]
    grid: list[GridPoint]
    base: ExperimentConfig
    sweep_dir: Path
    spec: dict[str, Any]
    configs: dict[str, ExperimentConfig]
    data_metrics: dict[str, float]
    unchecked: frozenset[str] = frozenset()


def plan_sweep(
    config_path: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    profile: str | None = None,
    grid_axes: Mapping[str, list[Any]] | None = None,
    name: str | None = None,
    resume: bool = False,
    seeds: int | None = None,
) -> SweepDraft:
    """Everything of ``run.run_sweep`` before Ray starts (arguments as there)."""
    fixed = (
        dict(overrides) if isinstance(overrides, Mapping) else dict(map(parse_override, overrides))
    )
    axes, points = read_sweep_section(config_path)
    axes.update(grid_axes or {})
    axes = with_seed_axis(axes, seeds)
    grid = expand_grid(axes, points)
    check_fixed_overrides(grid, fixed)
    name = check_output_name(name or default_sweep_name(config_path, profile), "sweep name")
    base = absolute_paths(load_config(config_path, fixed, profile=profile))
    sweep_dir = Path(base.ray.storage_path) / name
    # Every point is validated, and its data checked, before anything is written or started.
    configs = trial_configs(config_path, fixed, profile, grid, sweep_dir / TRAININGS_DIR)
    if base.ray.address:
        check_reachable(base.ray.address)
    configs = {slug: with_view_masks(cfg) for slug, cfg in configs.items()}
    reports, unchecked = check_trial_data(configs, base.ray.storage_path)
    spec = sweep_spec(name, config_path, profile, fixed, grid, base)
    prepare_sweep_dir(sweep_dir, spec, resume)
    configs = pin_skip_lists(configs, reports, sweep_dir, resume)
    metrics = {"data_skipped_train_images": float(sum(len(r.skipped) for r in reports.values()))}
    return SweepDraft(
        name,
        config_path,
        profile,
        axes,
        points,
        grid,
        base,
        sweep_dir,
        spec,
        prepare_shared_inputs(configs),
        metrics,
        unchecked,
    )


def data_key(cfg: ExperimentConfig) -> str:
    """What decides a point's pre-flight: its data section and whether it needs masks."""
    return json.dumps([cfg.to_dict()["data"], cfg.prompt.variant], sort_keys=True)


def check_trial_data(
    configs: Mapping[str, ExperimentConfig], storage_path: str
) -> tuple[dict[str, PreflightReport], frozenset[str]]:
    """One pre-flight per distinct data setting of the points (most sweeps share one),
    cached under the sweep's storage: (data key -> report of the settings that passed,
    the points whose data failed).

    When no point's data passes, nothing could run: the first failure is raised here,
    before Ray. When some pass, the others are logged and left to fail as trials (a
    sweep resumed once their data is in place runs them; finished points are kept).
    """
    reports: dict[str, PreflightReport] = {}
    failures: dict[str, Exception] = {}
    for cfg in configs.values():
        key = data_key(cfg)
        if key not in reports and key not in failures:
            try:
                reports[key] = check_data(cfg, storage_path)
            except DATA_ERRORS as exc:
                failures[key] = exc
    if failures and not reports:
        raise next(iter(failures.values()))
    failed = frozenset(slug for slug, cfg in configs.items() if data_key(cfg) in failures)
    for slug in sorted(failed):
        logger.error(
            "point %s: its data failed the pre-flight (%s); its trial will fail, the other "
            "points run. Fix the data and continue with --resume",
            slug,
            failures[data_key(configs[slug])],
        )
    return reports, failed


def pin_skip_lists(
    configs: Mapping[str, ExperimentConfig],
    reports: Mapping[str, PreflightReport],
    sweep_dir: Path,
    resume: bool,
) -> dict[str, ExperimentConfig]:
    """Each point's config with the skip list of its data (written into the sweep folder,
    named by a digest of the data setting when the points have several)."""
    several = len({data_key(cfg) for cfg in configs.values()}) > 1
    lists: dict[str, Path | None] = {}
    for key, report in reports.items():
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        file_name = f"{digest}-{SKIP_LIST}" if several else SKIP_LIST
        listed = json.loads(key)[0]["skip_list"]
        lists[key] = write_skip_list(sweep_dir / file_name, report.skipped, resume, listed)
    return {
        slug: pinned(cfg, {"data.skip_list": str(lists[data_key(cfg)])})
        if lists.get(data_key(cfg))
        else cfg
        for slug, cfg in configs.items()
    }


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
    trainings_dir: Path,
) -> dict[str, ExperimentConfig]:
    """slug -> the point's config, pinned for running inside a trial: Tune starts trials
    in their own folder, so paths are made absolute here; Train runs live under the
    sweep folder (the tracking store is pinned by ``run.execute_sweep``)."""

    return {
        point.slug: pinned(
            absolute_paths(point_config(config_path, overrides, profile, point)),
            {"ray.storage_path": str(trainings_dir)},
        )
        for point in grid
    }


def prepare_shared_inputs(configs: Mapping[str, ExperimentConfig]) -> dict[str, ExperimentConfig]:
    """Draw the synthetic sets the points need and check their weights, here on the
    driver, not in concurrent trials that would do the same work side by side."""

    prepared = {}
    for slug, cfg in configs.items():
        ensure_dataset(cfg)
        prepared[slug] = ensure_weights(cfg)
    return prepared


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
    if spec_path.is_file():
        raise ConfigError(
            f"sweep {spec['name']!r} already exists at {sweep_dir}; pass --resume to continue it "
            "or --name to start another"
        )
    claim_output_dir(sweep_dir, "sweep", purpose=f"sweep {spec['name']!r}")
    spec_path.write_text(json.dumps(spec, indent=1))
