"""Finished runs from MLflow: which store a folder means, a run's record, the MLflow UI.

``viewcoop ui`` and ``viewcoop show`` (``orchestrator/commands/runs.py``) call these. A
*store* is given as a storage folder holding ``mlflow.db`` (``runs/``), that file, a run
folder (``runs/<run name>``, whose saved ``config.yaml`` names its store) or a tracking
URI; nothing here needs Ray or the run's files, so runs that ended long ago still show.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from orchestrator.config import ExperimentConfig, read_yaml
from viewcoop_core.config import RayConfig

DB_FILE = "mlflow.db"
RUN_CONFIG = "config.yaml"
DEFAULT_UI_PORT = 5000
UI_START_TIMEOUT_S = 180.0  # the server imports all of MLflow: a minute on a busy 2-core machine


@dataclass(frozen=True)
class Store:
    """An MLflow tracking URI and, when a run folder was named, that run's name."""

    tracking_uri: str
    run_name: str | None = None


def default_store() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the default storage folder (``runs``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or RayConfig().storage_path


def resolve_store(target: str | os.PathLike | None) -> Store:
    """The store ``target`` names: a URI, a ``.db`` file, a storage or a run folder."""
    target = str(target if target is not None else default_store())
    if "://" in target:
        return Store(target)
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".db":
        return Store(f"sqlite:///{path.resolve()}")
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: give a storage folder holding {DB_FILE} (e.g. runs), "
            f"a run folder (e.g. runs/<run name>) or a tracking URI"
        )
    if (path / DB_FILE).is_file():
        return Store(f"sqlite:///{(path / DB_FILE).resolve()}")
    if (path / RUN_CONFIG).is_file():
        cfg = ExperimentConfig.from_dict(read_yaml(path / RUN_CONFIG))
        uri = cfg.tracking.tracking_uri or f"sqlite:///{Path(cfg.ray.storage_path) / DB_FILE}"
        return Store(uri, run_name=path.name)
    raise FileNotFoundError(
        f"{path} holds neither {DB_FILE} (a storage folder such as runs/) nor {RUN_CONFIG} "
        "(a run folder such as runs/<run name>)"
    )


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs/path`` or
    ``sqlite:///relative/path``), None for other stores."""
    prefix = "sqlite:///"
    return Path(unquote(tracking_uri[len(prefix) :])) if tracking_uri.startswith(prefix) else None


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on ``tracking_uri`` (what the CLI prints)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    db = sqlite_file(tracking_uri)
    if db is None:
        return f"viewcoop ui {tracking_uri}"
    from orchestrator.console import shown_path

    return f"viewcoop ui {shown_path(db.parent if db.name == DB_FILE else db)}"


def free_port(preferred: int = DEFAULT_UI_PORT) -> int:
    """``preferred`` when nothing listens on it on 127.0.0.1, else a port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free TCP port on 127.0.0.1")


def ui_server_command(tracking_uri: str, port: int) -> list[str]:
    """``mlflow ui`` on 127.0.0.1 with one worker (artifacts are read from the locations
    the runs logged them to)."""
    return [
        *(sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]


@contextlib.contextmanager
def serve_ui(tracking_uri: str, port: int = 0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the MLflow UI for ``tracking_uri`` on 127.0.0.1 until the block ends; yields
    (its base URL, the server process) once it answers. ``port`` 0: 5000 if free, else any.

    The server starts in a process group of its own, ended as a whole: MLflow's server
    starts uvicorn in a child process. MLflow's background job runner (GenAI evaluation
    jobs, six worker processes) is left off; browsing runs does not use it.
    """
    port = port or free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ui_server_command(tracking_uri, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process, log)
            yield url, process
        finally:
            stop_process_group(process)


def wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    """Poll ``url``/health until it answers 200; raise with the server's output if the
    server exits or does not answer within ``UI_START_TIMEOUT_S``."""
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the MLflow UI exited with code {process.returncode}:\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"the MLflow UI did not answer at {url} within {UI_START_TIMEOUT_S:.0f} s:\n{_tail(log)}"
    )


def _tail(log, lines: int = 20) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the process's group, SIGKILL after ``grace_s``; then SIGKILL to what
    is left of the group (a child that outlived its parent)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class RunRecord:
    """What ``viewcoop show`` prints about one MLflow run."""

    run_id: str
    name: str
    experiment: str
    experiment_id: str
    status: str
    started: float  # seconds since the epoch
    ended: float | None
    history: list[dict[str, float]]
    figures: list[str]  # local paths where the artifacts are files, else artifact URIs
    config_text: str


def find_run(client, run: str | None, store: Store):
    """The MLflow run ``run`` names: a run id, or a run name (the project's run-name tag,
    else MLflow's own); the newest when several runs share the name."""
    run = run or store.run_name
    if not run:
        raise ValueError(
            f"name a run of {store.tracking_uri}: a run name, an MLflow run id or a run folder"
        )
    experiments = [e.experiment_id for e in client.search_experiments()]
    for key in ("tags.`viewcoop.run_name`", "attributes.run_name"):
        found = client.search_runs(
            experiments, filter_string=f"{key} = '{run}'", order_by=["start_time DESC"]
        )
        if found:
            return found[0]
    with contextlib.suppress(Exception):  # not an id either: the error below names it
        return client.get_run(run)
    raise FileNotFoundError(
        f"no run named {run!r} in {store.tracking_uri} (give a run name, an MLflow run id "
        "or a run folder; `viewcoop ui` lists the runs)"
    )


def run_record(store: Store, run: str | None = None) -> RunRecord:
    """Results table rows, figures and the resolved config of a run, all from MLflow."""
    from mlflow.tracking import MlflowClient

    from viewcoop_core.engine.tracking import metric_history

    client = MlflowClient(store.tracking_uri)
    found = find_run(client, run, store)
    info = found.info
    experiment = client.get_experiment(info.experiment_id)
    return RunRecord(
        run_id=info.run_id,
        name=found.data.tags.get("viewcoop.run_name", info.run_name),
        experiment=experiment.name,
        experiment_id=info.experiment_id,
        status=info.status,
        started=info.start_time / 1000,
        ended=None if info.end_time is None else info.end_time / 1000,
        history=metric_history(store.tracking_uri, info.run_id),
        figures=artifact_locations(client, info, "figures", suffix=".png"),
        config_text=logged_config(client, found),
    )


def artifact_locations(client, info, folder: str, suffix: str) -> list[str]:
    """The run's artifacts under ``folder`` ending in ``suffix``: local paths for a
    ``file:`` artifact store, artifact URIs otherwise."""
    names = [a.path for a in client.list_artifacts(info.run_id, folder) if a.path.endswith(suffix)]
    local = local_artifact_dir(info.artifact_uri)
    if local is not None:
        return [str(local / name) for name in names]
    return [f"{info.artifact_uri.rstrip('/')}/{name}" for name in names]


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The folder of a ``file:`` (or plain path) artifact URI, None for remote stores."""
    parsed = urlparse(artifact_uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def logged_config(client, found) -> str:
    """The run's resolved ``config.yaml`` artifact; its parameters when it has none."""
    local = local_artifact_dir(found.info.artifact_uri)
    if local is not None and (local / RUN_CONFIG).is_file():
        return (local / RUN_CONFIG).read_text()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as directory:
        try:
            return Path(
                client.download_artifacts(found.info.run_id, RUN_CONFIG, directory)
            ).read_text()
        except Exception:  # noqa: BLE001 - no such artifact: the parameters say the same
            params = found.data.params
            return "".join(f"{key}: {params[key]}\n" for key in sorted(params))
