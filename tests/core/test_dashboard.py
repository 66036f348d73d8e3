"""viewcoop ui and viewcoop show: which store a folder means, a run's record, the UI."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.dashboard import (
    free_port,
    resolve_store,
    run_record,
    serve_ui,
    sqlite_file,
    ui_command,
)
from viewcoop_core.config import ExperimentConfig
from viewcoop_core.engine.results import history_text
from viewcoop_core.engine.tracking import RunTracker, default_tracking_uri

RUN_NAME = "demo-20260101-000000"
METRICS = {
    0: {"mAP": 0.1, "R1": 0.2, "R5": 0.3, "R10": 0.4},
    1: {"mAP": 0.15, "R1": 0.25, "R5": 0.35, "R10": 0.45, "img_clusters": 12, "img_ari": 0.5},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A storage folder as a training leaves it: mlflow.db, mlartifacts/, the run folder
    with its resolved config; the run logged metrics, config.yaml and a figure."""
    storage = tmp_path_factory.mktemp("store") / "runs"
    run_dir = storage / RUN_NAME
    run_dir.mkdir(parents=True)
    cfg = ExperimentConfig.from_dict({"name": "demo", "ray": {"storage_path": str(storage)}})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    figure = run_dir / "figures" / "fig4_distance_distributions.png"
    figure.parent.mkdir()
    figure.write_bytes(b"\x89PNG not really")
    tracker = RunTracker(
        default_tracking_uri(storage),
        "viewcoop-demo",
        RUN_NAME,
        artifact_root=str(storage / "mlartifacts"),
    )
    for step, metrics in METRICS.items():
        tracker.log_metrics(metrics, step=step)
    tracker.log_artifact(run_dir / "config.yaml")
    tracker.log_artifact(figure, "figures")
    tracker.finish()
    return run_dir


def test_a_store_is_found_from_a_storage_folder_a_run_folder_a_file_or_a_uri(finished_run):
    storage = finished_run.parent
    db_uri = f"sqlite:///{(storage / 'mlflow.db').resolve()}"
    assert resolve_store(storage).tracking_uri == db_uri
    assert resolve_store(storage / "mlflow.db").tracking_uri == db_uri
    from_run = resolve_store(finished_run)
    assert (from_run.tracking_uri, from_run.run_name) == (db_uri, RUN_NAME)
    assert resolve_store("http://mlflow:5000").tracking_uri == "http://mlflow:5000"
    assert sqlite_file(db_uri) == (storage / "mlflow.db").resolve()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_store(storage / "missing")
    with pytest.raises(FileNotFoundError, match="neither mlflow.db"):
        resolve_store(finished_run / "figures")


def test_the_printed_ui_command_names_the_storage_folder(finished_run, monkeypatch):
    monkeypatch.chdir(finished_run.parent.parent)
    uri = f"sqlite:///{(finished_run.parent / 'mlflow.db').resolve()}"
    assert ui_command(uri) == "viewcoop ui runs"
    assert ui_command("http://mlflow:5000").endswith("http://mlflow:5000 in a browser")


def test_show_prints_the_table_figures_and_config_from_mlflow(finished_run, capsys):
    record = run_record(resolve_store(finished_run))
    assert [row["epoch"] for row in record.history] == [0, 1]
    assert record.status == "FINISHED" and record.name == RUN_NAME
    [figure] = record.figures
    assert Path(figure).read_bytes() == b"\x89PNG not really"  # the artifact, not the run folder
    assert Path(figure).parent.parent.parent.parent.name == "mlartifacts"
    assert yaml.safe_load(record.config_text)["name"] == "demo"

    # by run name in the store, as for a run whose folder is gone
    assert main(["show", RUN_NAME, "--store", str(finished_run.parent)]) == 0
    out = capsys.readouterr().out
    assert history_text(record.history) in out
    assert "fig4_distance_distributions.png" in out
    assert "  name: demo" in out
    assert main(["show", "no-such-run", "--store", str(finished_run.parent)]) == 2
    assert "no run named 'no-such-run'" in capsys.readouterr().err


def test_free_port_avoids_a_busy_preferred_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = free_port(preferred=taken)
    assert port != taken
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_ui_serves_the_store_on_localhost_and_stops_with_its_children(finished_run):
    uri = f"sqlite:///{(finished_run.parent / 'mlflow.db').resolve()}"
    with serve_ui(uri) as (url, process):
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(
            f"{url}/ajax-api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            names = [e["name"] for e in json.load(response)["experiments"]]
        assert "viewcoop-demo" in names
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):  # uvicorn, its child, is gone too
        os.killpg(process.pid, 0)
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:  # nobody listens there any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()
