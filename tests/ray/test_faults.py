"""Faults a cluster inflicts, each injected on local Ray with 2 CPU workers: a Train worker
killed mid-run, the clustering actor killed while clustering, NaN losses, a degenerate
clustering, and Ctrl-C on the driver. Every one must end in a finished (or cleanly
stopped and resumable) run, with each epoch's metrics in MLflow exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.config import load_config
from orchestrator.errors import NonFiniteLossError
from orchestrator.train import local_instance_settings, run_training
from viewcoop_core.engine.checkpoint import read_checkpoint
from workers.faults import ENV

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def smoke(tmp_path: Path, *overrides: str):
    return load_config(
        REPO / "experiments" / "smoke.yaml",
        [
            f"data.root={tmp_path / 'data'}",
            f"ray.storage_path={tmp_path / 'runs'}",
            "train.figures=false",
            *overrides,
        ],
    )


def local_ray_with(fault: str) -> None:
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    local_instance_settings()
    ray.init(
        address="local",
        num_cpus=2,
        namespace="viewcoop-faults",
        include_dashboard=False,
        runtime_env={"env_vars": {ENV: fault}},
    )


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(c for c in run_dir.glob("checkpoint_*") if c.is_dir())


def epochs_logged(tracking_uri: str, run_name: str) -> list[int]:
    """Epochs with metrics in MLflow for run ``run_name`` (empty until the store exists)."""
    try:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("viewcoop-smoke")
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`viewcoop.run_name` = '{run_name}'"
        )
        return sorted(steps_logged(tracking_uri, runs[0].info.run_id, "epoch")) if runs else []
    except Exception:  # the store is being created by the run under test
        return []


def steps_logged(tracking_uri: str, run_id: str, key: str) -> Counter:
    return Counter(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def test_a_killed_worker_and_a_killed_actor_do_not_stop_the_run(tmp_path):
    local_ray_with("worker_exit@epoch=2,rank=1;actor_exit@epoch=3")
    try:
        cfg = smoke(tmp_path, "train.epochs=3", "ray.max_failures=1")
        outcome = run_training(cfg, run_name="survivor")
    finally:
        ray.shutdown()
    assert (outcome.run_dir / ".fault-worker_exit").is_file()  # the worker did die
    assert [row["epoch"] for row in outcome.history] == [0, 1, 2, 3]
    assert steps_logged(outcome.tracking_uri, outcome.mlflow_run_id, "epoch") == {1: 1, 2: 1, 3: 1}
    assert steps_logged(outcome.tracking_uri, outcome.mlflow_run_id, "mAP") == {
        0: 1,
        1: 1,
        2: 1,
        3: 1,
    }
    attempts = MlflowClient(outcome.tracking_uri).get_metric_history(
        outcome.mlflow_run_id, "cluster_attempts"
    )
    assert {m.step: m.value for m in attempts}[3] == 2.0  # epoch 3 clustered again
    run = MlflowClient(outcome.tracking_uri).get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"


def test_degenerate_clustering_skips_and_nan_losses_stop_the_run(tmp_path):
    local_ray_with("nan@epoch=2")
    try:
        # No neighbourhood is that large: every sample an outlier, nothing to train on.
        skipped = run_training(
            smoke(tmp_path / "a", "cluster.min_samples=500", "train.epochs=2"),
            run_name="degenerate",
        )
        with pytest.raises(NonFiniteLossError, match=r"epoch 2: loss term\(s\) .*L_"):
            run_training(smoke(tmp_path / "b", "train.epochs=3"), run_name="poisoned")
    finally:
        ray.shutdown()
    client = MlflowClient(skipped.tracking_uri)
    history = client.get_metric_history(skipped.mlflow_run_id, "skipped_training")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [1.0, 1.0]
    assert all(row["mAP"] == row["mAP"] for row in skipped.history)  # no NaN

    run_dir = tmp_path / "b" / "runs" / "poisoned"
    checkpoints = sorted(c for c in run_dir.glob("checkpoint_*") if c.is_dir())
    assert [read_checkpoint(c)["epoch"] for c in checkpoints][-1] == 1  # the last good one
    client = MlflowClient(f"sqlite:///{tmp_path / 'b' / 'runs' / 'mlflow.db'}")
    poisoned = client.search_runs(
        [client.get_experiment_by_name("viewcoop-smoke").experiment_id],
        filter_string="tags.`viewcoop.run_name` = 'poisoned'",
    )[0]
    assert poisoned.info.status == "FAILED"
    assert "non-finite" in poisoned.data.tags["viewcoop.stopped"]


# Slow and timing-bound (a SIGINT after an epoch's checkpoint): it failed once in a
# clean-clone run of the whole suite and passed in the slow-only run of the same code, so
# it runs under `make test-all` until that is understood.
@pytest.mark.slow
def test_ctrl_c_stops_within_seconds_and_the_same_command_resumes(tmp_path):
    command = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "train",
        str(REPO / "experiments" / "smoke.yaml"),
        f"data.root={tmp_path / 'data'}",
        f"ray.storage_path={tmp_path / 'runs'}",
        "ray.address=local",
        "train.epochs=4",
        "train.iters=8",
        "train.figures=false",
        "train.save_labels=true",
        "--num-cpus=2",
        "--run-name=interrupted",
    ]
    env = {**os.environ, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120"}
    # stderr goes to a file, not a pipe: nobody reads a pipe while the test polls MLflow, and
    # a run that logs more than the pipe buffer (64 KiB) would block on write, never finish
    # epoch 1 and time the test out (what the one failed clean-clone run looked like).
    log = tmp_path / "first.stderr"
    with log.open("w") as sink:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=sink, text=True)
    try:
        run_dir = tmp_path / "runs" / "interrupted"
        tracking = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
        deadline = time.monotonic() + 240
        # Epoch 1's metrics reach MLflow only once its checkpoint is registered.
        while not epochs_logged(tracking, "interrupted") and time.monotonic() < deadline:
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert epochs_logged(tracking, "interrupted"), "no epoch finished within 4 minutes"
        interrupted_at = time.time()
        first.send_signal(signal.SIGINT)
        start = time.monotonic()
        first.wait(timeout=60)
        assert time.monotonic() - start < 30
        stderr = log.read_text()
        assert first.returncode == 130
        assert "resume it with" in stderr and "--run-name=interrupted" in stderr
    finally:  # never leave a stray driver (and its Ray) behind a failed assertion
        if first.poll() is None:
            first.kill()
            first.wait()

    second = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    # Resumed, not started over: epochs clustered before Ctrl-C were not clustered again.
    labelled = {
        int(p.name[5:8]): p.stat().st_mtime for p in (run_dir / "pseudo_labels").glob("*rank0.npz")
    }
    done_before = [e for e, mtime in labelled.items() if mtime < interrupted_at]
    assert done_before and sorted(labelled) == [1, 2, 3, 4]
    assert all(labelled[e] > interrupted_at for e in set(labelled) - set(done_before))
    client = MlflowClient(tracking)
    [run] = client.search_runs(
        [client.get_experiment_by_name("viewcoop-smoke").experiment_id],
        filter_string="tags.`viewcoop.run_name` = 'interrupted'",
    )
    assert run.info.status == "FINISHED"
    assert steps_logged(tracking, run.info.run_id, "epoch") == {1: 1, 2: 1, 3: 1, 4: 1}
