"""End to end on local Ray: 2 gloo workers, the clustering actor, MLflow, checkpoints, resume."""

from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from orchestrator.config import load_config
from orchestrator.train import run_training
from viewcoop_core.engine.tracking import RunTracker
from workers import reporting

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def smoke_config(tmp_path: Path, *overrides: str):
    return load_config(
        REPO / "experiments" / "smoke.yaml",
        [
            f"data.root={tmp_path / 'data'}",
            f"ray.storage_path={tmp_path / 'runs'}",
            "train.save_labels=true",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def trained(local_ray, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("smoke")
    # The decoded-image caches (train.device_cache) in the Ray workers; the fault tests
    # run the same config from the files.
    outcome = run_training(smoke_config(tmp_path, "train.device_cache=true"), run_name="itest")
    return tmp_path, outcome


def test_run_completes_with_checkpoint(trained):
    _, outcome = trained
    assert outcome.checkpoint_path and (Path(outcome.checkpoint_path) / "state.pt").is_file()
    assert outcome.metrics["epoch"] == 2
    assert [row["epoch"] for row in outcome.history] == [0, 1, 2]  # 0: before training
    assert all(0.0 <= row["mAP"] <= 1.0 for row in outcome.history)


def test_mlflow_has_params_metrics_and_artifacts(trained):
    _, outcome = trained
    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["prompt.variant"] == "viewcoop"
    assert params["graph.tau"] == "[1, 2]"
    assert params["train.epochs"] == "2"
    for key in (
        "mAP",
        "R1",
        "L_v_ce",
        "L_g",
        "L_cm",
        "L_t",
        "img_clusters",
        "txt_clusters",
        "img_ari",
        "extract_s",
    ):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        # rank metrics also at step 0: the backbone before any training
        assert steps == ([0, 1, 2] if key in ("mAP", "R1") else [1, 2]), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.md", "figures"} <= artifacts
    # What rank 0 trained on, beside the config: the figures' digits hold on one stack.
    assert run.data.tags["env.torch"] == torch.__version__
    assert run.data.tags["env.torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert run.data.tags["env.ray"] == ray.__version__
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/fig4_distance_distributions.png" in figures


def test_every_worker_received_the_same_labels(trained):
    tmp_path, outcome = trained
    labels_dir = outcome.run_dir / "pseudo_labels"
    for epoch in (1, 2):
        rank0 = np.load(labels_dir / f"epoch{epoch:03d}_rank0.npz")
        rank1 = np.load(labels_dir / f"epoch{epoch:03d}_rank1.npz")
        for key in ("y_img", "y_txt"):
            assert len(rank0[key]) == 64  # 8 train ids (half of 16) x 4 cameras x 2 images
            np.testing.assert_array_equal(rank0[key], rank1[key])


def test_same_run_name_resumes_at_the_next_epoch(trained):
    tmp_path, outcome = trained
    resumed = run_training(smoke_config(tmp_path, "train.epochs=3"), run_name="itest")
    assert resumed.mlflow_run_id == outcome.mlflow_run_id
    client = MlflowClient(resumed.tracking_uri)
    assert [m.step for m in client.get_metric_history(resumed.mlflow_run_id, "mAP")] == [0, 1, 2, 3]
    assert [m.value for m in client.get_metric_history(resumed.mlflow_run_id, "epoch")] == [1, 2, 3]
    assert client.get_run(resumed.mlflow_run_id).info.status == "FINISHED"
    assert (resumed.run_dir / "pseudo_labels" / "epoch003_rank0.npz").is_file()


def test_graph_against_all_samples_trains_on_two_workers(local_ray, tmp_path):
    """loss.graph_scope all: the clustering actor sends the image features back and each
    gloo worker keeps the instance memory of all N images (updates gathered)."""
    outcome = run_training(
        smoke_config(tmp_path, "train.epochs=1", "loss.graph_scope=all"), run_name="itest-all"
    )
    assert outcome.metrics["epoch"] == 1
    client = MlflowClient(outcome.tracking_uri)
    (graph_loss,) = client.get_metric_history(outcome.mlflow_run_id, "L_g")
    assert 0 < graph_loss.value < 2  # a mean of (1 -+ cos) over pairs


def test_a_resume_on_another_stack_keeps_the_first_environment_and_says_what_changed(
    tmp_path, monkeypatch, caplog
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = RunTracker(uri, "env-test", "first").run_id
    config = {
        "run_dir": str(tmp_path),
        "run_name": "first",
        "mlflow": {"tracking_uri": uri, "experiment": "env-test", "run_id": run_id},
    }
    first = reporting.Reporter(0, config).tracker.tags("env.")
    assert first["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    moved = {**first, "torch_cpu_capability": "AVX512-elsewhere"}
    monkeypatch.setattr(reporting, "software_environment", lambda: moved)
    with caplog.at_level("WARNING", logger=reporting.__name__):
        resumed = reporting.Reporter(0, config).tracker.tags("env.")
    assert resumed == first
    assert (
        f"torch_cpu_capability: {first['torch_cpu_capability']} -> AVX512-elsewhere" in caplog.text
    )
    caplog.clear()
    monkeypatch.setattr(reporting, "software_environment", lambda: first)
    reporting.Reporter(0, config)
    assert "resumes on another" not in caplog.text
