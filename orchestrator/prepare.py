"""Everything a training does before Ray starts: the dataset drawn and checked, paths
pinned, weights ready, the run folder claimed.

Nothing here imports Ray, MLflow or torch (the view parser imports torch when a run names
one), so ``viewcoop train`` reports a bad config or a bad file in
seconds, and a dataset error leaves no empty ``runs/<name>/`` behind: the run folder is
claimed only once the data passed.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from viewcoop_core.config import ConfigError, ExperimentConfig, apply_overrides
from viewcoop_core.data.datasets import read_skip_list
from viewcoop_core.data.preflight import DataCheckError, PreflightReport, preflight
from viewcoop_core.outputs import check_output_name, claim_output_dir, owns, write_marker
from viewcoop_core.synthetic import ensure_synthetic

logger = logging.getLogger(__name__)

RUN_KIND = "run"
CACHE_KIND = "preflight-cache"
CACHE_DIR = ".preflight-cache"
SKIP_LIST = "skipped_images.txt"
RAY_CONNECT_TIMEOUT_S = 5.0
RAY_DEFAULT_PORTS = {"ray://": 10001, "": 6379}


@dataclass
class PreparedRun:
    """A run ready for Ray: ``cfg`` with absolute paths, pinned weights and the skip
    list of the pre-flight; ``data_metrics`` go to the run's MLflow metrics."""

    cfg: ExperimentConfig
    run_name: str
    run_dir: Path
    data_metrics: dict[str, float]


def default_run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def ensure_dataset(cfg: ExperimentConfig) -> None:
    """Draw the synthetic set when it is the chosen dataset and not there yet (or drawn
    with other parameters, e.g. an older demo's set)."""
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data.root, cfg.data.synthetic)


def ensure_weights(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check shipped weights (``model.pretrained: synthetic``) against their checksum
    here, before Ray starts, so a damaged installation is named at once."""
    from viewcoop_core.vocabulary import SHIPPED_WEIGHTS

    if cfg.model.pretrained in SHIPPED_WEIGHTS:
        from viewcoop_core.models.shipped import ShippedWeightsError, shipped_weights

        try:
            shipped_weights(cfg.model.pretrained, cfg.model.name)
        except ShippedWeightsError as exc:
            raise ConfigError(f"model.pretrained={cfg.model.pretrained!r}: {exc}") from exc
    return cfg


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Workers may start in another directory: pin relative data and storage paths."""
    paths = {"data.root": str(Path(cfg.data.root).resolve())}
    for key, value in (
        ("data.masks_dir", cfg.data.masks_dir),
        ("data.skip_list", cfg.data.skip_list),
    ):
        if value:
            paths[key] = str(Path(value).resolve())
    if "://" not in cfg.ray.storage_path:
        paths["ray.storage_path"] = str(Path(cfg.ray.storage_path).resolve())
    return pinned(cfg, paths)


def pinned(cfg: ExperimentConfig, values: dict[str, object]) -> ExperimentConfig:
    """``cfg`` with dotted ``values`` set (validated again)."""
    return ExperimentConfig.from_dict(apply_overrides(cfg.to_dict(), values))


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that ``address`` points at; None for "auto" and "local", which
    Ray resolves itself (RAY_ADDRESS, the latest local cluster, or a new instance)."""
    if address in ("auto", "local"):
        return None
    scheme = "ray://" if address.startswith("ray://") else ""
    rest = address.removeprefix(scheme)
    host, sep, port = rest.rpartition(":")
    if not sep:  # no port: Ray's default for the scheme
        host, port = rest, str(RAY_DEFAULT_PORTS[scheme])
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(
            f"ray.address={address!r} is not allowed; expected host:port of a Ray head "
            "(e.g. 10.0.0.5:6379), ray://host:10001, 'auto' or 'local'"
        )
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` when nothing accepts TCP connections at ``address``:
    ``ray.init`` would otherwise retry for minutes without saying why."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"ray.address={address!r}: cannot reach a Ray head at {endpoint[0]}:{endpoint[1]} "
            f"({exc or type(exc).__name__}; waited up to {timeout_s:.0f} s). Start one there "
            "(ray start --head), fix the address, or drop ray.address for a local instance"
        ) from exc


def cache_dir(storage_path: str) -> Path | None:
    """The pre-flight's cache folder under the run storage; None for remote storage."""
    if "://" in storage_path:
        return None
    return claim_output_dir(
        Path(storage_path) / CACHE_DIR, CACHE_KIND, purpose="the pre-flight cache"
    )


def with_view_masks(cfg: ExperimentConfig) -> ExperimentConfig:
    """The synthetic set drawn if needed, and with ``data.view_parser`` the predicted
    view masks made (once; cached) and pinned as ``data.masks_dir``."""
    ensure_dataset(cfg)
    if not cfg.data.view_parser:
        return cfg
    # The parser needs torch: imported only here, so a config typo still fails in a second.
    from viewcoop_core.viewparse.cache import prepare_view_masks

    return prepare_view_masks(cfg)


def check_data(cfg: ExperimentConfig, storage_path: str | None = None) -> PreflightReport:
    """The synthetic set drawn if needed, then every file checked (``data.preflight``),
    cached under ``storage_path`` (default ``ray.storage_path``)."""
    ensure_dataset(cfg)
    storage = storage_path or cfg.ray.storage_path
    return preflight(cfg.data, cfg.prompt.variant, cache_dir(storage))


def claim_run_dir(run_dir: Path) -> Path:
    """The run's folder: new, or one of ours (marked; a run of an earlier version is
    recognised by its resolved config.yaml), never a foreign folder."""
    if (run_dir / "config.yaml").is_file() and not owns(run_dir, RUN_KIND):
        write_marker(run_dir, RUN_KIND)
    return claim_output_dir(run_dir, RUN_KIND, purpose="a training run")


def write_skip_list(
    path: Path, skipped: dict[str, str], resuming: bool, listed: str | None = None
) -> Path | None:
    """The skip list at ``path`` (image path, tab, why) for the workers; None when empty.

    ``listed``: the user's own ``data.skip_list``, whose entries are kept. A resumed run
    keeps skipping what it skipped before (its checkpoint was trained on that set), and
    refuses to lose more images than it did: its pseudo-labels would no longer match.
    """
    before = read_skip_list(path) if resuming and path.is_file() else set()
    if resuming and set(skipped) - before:
        new = sorted(set(skipped) - before)
        raise DataCheckError(
            f"{len(new)} training image(s) became unreadable since this run began "
            f"({', '.join(new[:5])}); resuming would train on another set than its "
            "checkpoint. Restore the files, or start a new run (another --run-name)"
        )
    entries = dict.fromkeys(before, "skipped when the run began")
    if listed:
        entries.update(dict.fromkeys(read_skip_list(listed), f"listed in {listed}"))
    entries.update(skipped)
    if not entries:
        return None
    path.write_text("".join(f"{p}\t{why}\n" for p, why in sorted(entries.items())))
    return path


def has_checkpoint(run_dir: Path) -> bool:
    return any(run_dir.glob("checkpoint_*"))


def prepare_run(
    cfg: ExperimentConfig, run_name: str | None = None, check: bool = True
) -> PreparedRun:
    """Paths, the Ray head's address, data, weights and the run folder, in that order
    (see the module docstring).

    ``check=False`` skips the address and data checks (a sweep's driver ran them for all
    its trials).
    """
    cfg = absolute_paths(cfg)
    run_name = check_output_name(run_name or default_run_name(cfg), "run name")
    if check and cfg.ray.address:
        check_reachable(cfg.ray.address)
    cfg = with_view_masks(cfg)
    report = check_data(cfg) if check else None
    cfg = ensure_weights(cfg)
    run_dir = claim_run_dir(Path(cfg.ray.storage_path) / run_name)
    metrics: dict[str, float] = {}
    if report is not None:
        skip_list = write_skip_list(
            run_dir / SKIP_LIST, report.skipped, has_checkpoint(run_dir), cfg.data.skip_list
        )
        if skip_list is not None:
            cfg = pinned(cfg, {"data.skip_list": str(skip_list)})
        metrics = report.metrics()
    return PreparedRun(cfg, run_name, run_dir, metrics)
