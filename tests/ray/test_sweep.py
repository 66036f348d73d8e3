"""Ray Tune sweeps end to end on local Ray (2 CPUs): trials, MLflow parent/children,
the summary artifacts, and a failed trial finished by a resume that keeps the others."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.sweep.parent_run import PARENT_RUN_FILE
from orchestrator.sweep.run import run_sweep
from viewcoop_core.config import ConfigError
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "viewcoop.run_name"


def children_by_name(client: MlflowClient, parent_run_id: str) -> dict[str, list]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    )
    named: dict[str, list] = {}
    for run in runs:
        named.setdefault(run.data.tags[RUN_NAME_TAG], []).append(run)
    return named


def final_metric(client: MlflowClient, run_id: str, key: str) -> float:
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return history[-1].value


@pytest.fixture(scope="module")
def tau_sweep(local_ray, tmp_path_factory):
    """The shipped Table 3 config, smoke profile, two tau values, 2 epochs x 2 iterations."""
    tmp = tmp_path_factory.mktemp("sweep")
    outcome = run_sweep(
        REPO / "experiments" / "table3_tau.yaml",
        [
            f"data.root={tmp / 'data'}",
            f"ray.storage_path={tmp / 'runs'}",
            "train.epochs=2",
            "train.iters=2",
        ],
        profile="smoke",
        grid_axes={"graph.tau": ["0", "1or2"]},
        name="tau",
    )
    return tmp, outcome


def test_both_trials_finish_as_children_of_one_parent(tau_sweep):
    tmp, outcome = tau_sweep
    assert outcome.errors == {}
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.point.tau_0"] == "graph.tau=0"
    assert parent.data.params["train.epochs"] == "2"  # the base config, flattened
    assert (
        json.loads((tmp / "runs" / "tau" / PARENT_RUN_FILE).read_text())["run_id"]
        == outcome.parent_run_id
    )

    children = children_by_name(client, outcome.parent_run_id)
    assert sorted(children) == ["tau-tau_0", "tau-tau_1or2"]
    for run_name, tau in (("tau-tau_0", "[0]"), ("tau-tau_1or2", "[1, 2]")):
        [run] = children[run_name]
        assert run.info.status == "FINISHED"
        assert run.data.params["graph.tau"] == tau
        assert [m.step for m in client.get_metric_history(run.info.run_id, "mAP")] == [0, 1, 2]
    assert outcome.child_run_ids == {
        "tau_0": children["tau-tau_0"][0].info.run_id,
        "tau_1or2": children["tau-tau_1or2"][0].info.run_id,
    }


def test_summary_table_on_the_parent_matches_the_children(tau_sweep):
    _, outcome = tau_sweep
    client = MlflowClient(outcome.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id, "summary")}
    assert {
        "summary/table.md",
        "summary/table.csv",
        "summary/mAP_per_epoch.png",
        "summary/bars_graph.tau.png",
    } <= artifacts

    local = Path(client.download_artifacts(outcome.parent_run_id, "summary/table.csv"))
    rows = list(csv.DictReader(local.open()))
    assert [(r["point"], r["graph.tau"], r["epoch"]) for r in rows] == [
        ("tau=0", "0", "2"),
        ("tau=1or2", "1or2", "2"),
    ]
    expected = {}
    for row, slug in zip(rows, ("tau_0", "tau_1or2")):
        run_id = outcome.child_run_ids[slug]
        for key in ("mAP", "R1", "R5", "R10"):
            assert float(row[key]) == pytest.approx(
                100 * final_metric(client, run_id, key), abs=1e-3
            )
        expected[row["point"]] = float(row["mAP"])
    best = max(expected, key=lambda p: (expected[p], -list(expected).index(p)))
    assert [r["point"] for r in rows if r["best"] == "1"] == [best]
    markdown = Path(
        client.download_artifacts(outcome.parent_run_id, "summary/table.md")
    ).read_text()
    assert f"| **{best}** |" in markdown


def write_points_config(tmp: Path, late_root: Path) -> Path:
    """The smoke config plus two named points; "late" reads a VeRi-layout folder that does
    not exist yet, so its trial fails until the test creates it."""
    config = yaml.safe_load((REPO / "experiments" / "smoke.yaml").read_text())
    config["data"]["root"] = str(tmp / "data")
    config["ray"]["storage_path"] = str(tmp / "runs")
    config["ray"]["cpus_per_worker"] = 0.49
    config["train"].update(epochs=1, iters=2)
    config["sweep"] = {
        "points": {
            "ready": {},
            "late": {
                "data.dataset": "veri776",
                "data.root": str(late_root),
                "data.masks_dir": str(late_root / "masks"),
            },
        }
    }
    path = tmp / "points.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_resume_keeps_the_finished_trial_and_completes_the_failed_one(local_ray, tmp_path):
    late_root = tmp_path / "late"
    config = write_points_config(tmp_path, late_root)
    first = run_sweep(config, name="resumable")
    assert set(first.errors) == {"late"} and "DatasetLayoutError" in first.errors["late"]
    client = MlflowClient(first.tracking_uri)
    assert client.get_run(first.parent_run_id).info.status == "FAILED"
    children = children_by_name(client, first.parent_run_id)
    assert sorted(children) == ["resumable-ready"]
    ready = children["resumable-ready"][0]
    ready_results = (first.sweep_dir / "trial_ready" / "result.json").read_text()

    with pytest.raises(ConfigError, match="already exists"):
        run_sweep(config, name="resumable")
    with pytest.raises(ConfigError, match="train.iters"):
        run_sweep(config, ["train.iters=3"], name="resumable", resume=True)

    syn = yaml.safe_load((REPO / "experiments" / "smoke.yaml").read_text())["data"]["synthetic"]
    make_synthetic(late_root, SyntheticSpec(**syn))
    second = run_sweep(config, name="resumable", resume=True)
    assert second.errors == {}
    assert second.parent_run_id == first.parent_run_id
    assert client.get_run(second.parent_run_id).info.status == "FINISHED"

    children = children_by_name(client, first.parent_run_id)
    assert sorted(children) == ["resumable-late", "resumable-ready"]
    [ready_again] = children["resumable-ready"]
    # Not re-run: the same MLflow run, untouched since it ended, and Tune's results kept as they were.
    assert ready_again.info.run_id == ready.info.run_id
    assert ready_again.info.end_time == ready.info.end_time
    assert (second.sweep_dir / "trial_ready" / "result.json").read_text() == ready_results
    [late] = children["resumable-late"]
    assert late.info.status == "FINISHED"
    assert late.data.params["data.dataset"] == "veri776"
    assert [m.step for m in client.get_metric_history(late.info.run_id, "mAP")] == [0, 1]
    assert [row.status for row in second.rows] == ["finished", "finished"]
    assert sum(row.best for row in second.rows) == 1
