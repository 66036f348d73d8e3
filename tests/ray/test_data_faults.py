"""A corrupt training image on local Ray: left out by the pre-flight, counted in MLflow,
and the workers train on the rest (before, it failed ~90 s in, inside a worker, with an
``OSError: image file is truncated`` that named no file)."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.config import load_config
from orchestrator.prepare import SKIP_LIST, ensure_dataset
from orchestrator.train import run_training
from viewcoop_core.data.datasets import load_dataset

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_a_truncated_training_image_is_skipped_and_counted(local_ray, tmp_path):
    cfg = load_config(
        REPO / "experiments" / "smoke.yaml",
        [
            f"data.root={tmp_path / 'data'}",
            f"ray.storage_path={tmp_path / 'runs'}",
            "data.max_skipped_fraction=0.1",
            "train.epochs=1",
            "train.figures=false",
        ],
    )
    ensure_dataset(cfg)
    train = load_dataset(cfg.data).train
    bad = Path(train[5].path)
    bad.write_bytes(bad.read_bytes()[:200])

    outcome = run_training(cfg, run_name="skip")
    skip_list = outcome.run_dir / SKIP_LIST
    assert skip_list.read_text().startswith(f"{bad}\t")
    client = MlflowClient(outcome.tracking_uri)
    skipped = client.get_metric_history(outcome.mlflow_run_id, "data_skipped_train_images")
    assert [m.value for m in skipped] == [1.0]
    trained_on = client.get_metric_history(outcome.mlflow_run_id, "data_train_images")
    assert [m.value for m in trained_on] == [len(train) - 1]
    assert outcome.metrics["epoch"] == 1
